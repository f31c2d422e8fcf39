"""Build the model the settings ask for."""

from agents import Model, OpenAIResponsesModel
from openai import AsyncOpenAI

from chatkit_backend.providers.offline import OfflineModel
from chatkit_backend.settings import Settings

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"


def build_model(settings: Settings) -> Model:
    """The offline model, or an OpenAI Responses model honouring `OPENAI_BASE_URL`."""
    match settings.resolved_provider:
        case "offline":
            return OfflineModel(token_delay=settings.offline_token_delay_ms / 1000)
        case "openai":
            assert settings.openai_api_key is not None  # the settings validator ensures it
            client = AsyncOpenAI(
                api_key=settings.openai_api_key.get_secret_value(),
                base_url=settings.openai_base_url,
                timeout=settings.llm_timeout_seconds,
                max_retries=1,
            )
            return OpenAIResponsesModel(
                model=settings.llm_model or DEFAULT_OPENAI_MODEL, openai_client=client
            )
