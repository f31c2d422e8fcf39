"""All configuration, read once from the environment and `.env`."""

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/chatkit.db"

Provider = Literal["offline", "openai"]


class Settings(BaseSettings):
    """One place for every setting; names match the environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    env: Literal["development", "production"] = "development"
    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = Field(default=10, ge=1, le=500)

    llm_provider: Provider | None = None
    llm_model: str | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    agents_tracing: bool = False
    offline_token_delay_ms: int = Field(default=15, ge=0, le=10_000)

    auth_mode: Literal["none"] = "none"
    local_user_id: str = "local"
    local_tenant_id: str = "local"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_page_size: int = Field(default=100, ge=1, le=1000)
    history_items: int = Field(default=30, ge=1, le=1000)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _fail_fast(self) -> "Settings":
        if self.llm_provider == "openai" and self.openai_api_key is None:
            raise ValueError("LLM_PROVIDER=openai needs OPENAI_API_KEY")
        return self

    @property
    def resolved_provider(self) -> Provider:
        """The provider in use: explicit, else `openai` when a key is set, else `offline`."""
        if self.llm_provider is not None:
            return self.llm_provider
        return "openai" if self.openai_api_key is not None else "offline"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
