"""Build the model the settings ask for, and close what it holds."""

from dataclasses import dataclass
from typing import assert_never

from agents import Model, OpenAIResponsesModel
from openai import AsyncOpenAI

from chatkit_backend.providers.offline import OfflineModel
from chatkit_backend.settings import Settings

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"


@dataclass(frozen=True, slots=True)
class Provider:
    """A model and the HTTP client behind it, if any."""

    model: Model
    client: AsyncOpenAI | None = None

    async def aclose(self) -> None:
        """Close the model and its connections."""
        await self.model.close()
        if self.client is not None:
            await self.client.close()


def build_provider(settings: Settings) -> Provider:
    """The offline model, or an OpenAI Responses model honouring `OPENAI_BASE_URL`."""
    provider = settings.resolved_provider
    match provider:
        case "offline":
            return Provider(OfflineModel(token_delay=settings.offline_token_delay_ms / 1000))
        case "openai":
            assert settings.openai_api_key is not None  # the settings validator ensures it
            client = AsyncOpenAI(
                api_key=settings.openai_api_key.get_secret_value(),
                base_url=settings.openai_base_url,
                timeout=settings.llm_timeout_seconds,
                max_retries=1,
            )
            model = OpenAIResponsesModel(
                model=settings.llm_model or DEFAULT_OPENAI_MODEL, openai_client=client
            )
            return Provider(model, client)
        case _:
            assert_never(provider)
