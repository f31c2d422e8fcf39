"""Build the models the settings ask for, and close what they hold."""

from dataclasses import dataclass, field
from typing import assert_never

from agents.models.interface import Model, ModelProvider
from openai import AsyncOpenAI

from chatkit_backend.providers.offline import OfflineModel
from chatkit_backend.providers.openai_models import LeanChatCompletionsModel, LeanResponsesModel
from chatkit_backend.settings import GEMINI_BASE_URL, ModelApi, Settings

# Local servers (Ollama, llama.cpp) ignore the key, but the client insists on one.
PLACEHOLDER_KEY = "not-needed"


@dataclass
class Provider(ModelProvider):
    """Hands out models by name, all sharing one HTTP client (if any), and says what
    its models can do."""

    default_name: str
    api: ModelApi
    client: AsyncOpenAI | None = None
    token_delay: float = 0.0
    # PDFs as `input_file` parts: OpenAI reads them; Gemini's and local servers'
    # OpenAI-compatible endpoints refuse them, so those get a note instead.
    reads_files: bool = True
    _models: dict[str, Model] = field(default_factory=dict)

    @property
    def offline(self) -> bool:
        """The built-in offline model: no network, no key, nothing billed."""
        return self.client is None

    @property
    def asks_for_usage(self) -> bool:
        """Chat Completions servers report token usage only when asked (the Agents SDK
        asks only api.openai.com by itself)."""
        return self.api == "chat_completions"

    def get_model(self, model_name: str | None) -> Model:
        name = model_name or self.default_name
        if name not in self._models:
            self._models[name] = self._build(name)
        return self._models[name]

    def _build(self, name: str) -> Model:
        if self.client is None:
            return OfflineModel(token_delay=self.token_delay)
        match self.api:
            # The SDK's OpenAI models, reading their streams without per-event validation.
            case "responses":
                return LeanResponsesModel(model=name, openai_client=self.client)
            case "chat_completions":
                return LeanChatCompletionsModel(model=name, openai_client=self.client)
            case _:
                assert_never(self.api)

    async def aclose(self) -> None:
        """Close the models and their connections."""
        for model in self._models.values():
            await model.close()
        if self.client is not None:
            await self.client.close()


def build_provider(settings: Settings) -> Provider:
    """The provider `LLM_PROVIDER` names, with its credentials and base URL."""
    name, api = settings.model_name, settings.model_api
    match settings.resolved_provider:
        case "offline":
            delay = settings.offline_token_delay_ms / 1000
            return Provider(name, api, token_delay=delay)
        case "openai":
            key, base_url = settings.openai_api_key, settings.openai_base_url
            reads_files = True
        case "gemini":
            key, base_url = settings.gemini_api_key, settings.llm_base_url or GEMINI_BASE_URL
            reads_files = False
        case "openai-compatible":
            key, base_url = settings.llm_api_key, settings.llm_base_url
            reads_files = False
        case unknown:
            assert_never(unknown)
    client = AsyncOpenAI(
        api_key=key.get_secret_value() if key is not None else PLACEHOLDER_KEY,
        base_url=base_url,
        timeout=settings.llm_timeout_seconds,
        max_retries=1,
    )
    return Provider(name, api, client, reads_files=reads_files)
