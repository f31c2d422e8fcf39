"""All configuration, read once from the environment and `.env`."""

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from redis.asyncio.connection import parse_url as parse_redis_url
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/chatkit.db"
# The engine speaks asyncio drivers only; the usual spellings of a URL are mapped to them.
DATABASE_DRIVERS = {
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite": "sqlite+aiosqlite",
}
DATABASE_URL_SHAPES = "postgresql://user:password@host:5432/database or sqlite:///path/to/file.db"

Provider = Literal["offline", "openai", "gemini", "openai-compatible"]
ModelApi = Literal["responses", "chat_completions"]

# Each provider's default model and API; Gemini and most local servers speak only
# Chat Completions.
PROVIDER_DEFAULTS: dict[Provider, tuple[str, ModelApi]] = {
    "offline": ("offline", "responses"),
    "openai": ("gpt-4.1-mini", "responses"),
    "gemini": ("gemini-2.5-flash", "chat_completions"),
    "openai-compatible": ("llama3.2", "chat_completions"),
}
GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"
# Images the model can see, PDFs, and text it can read; code files arrive as text/plain.
DEFAULT_ATTACHMENT_TYPES = (
    "image/png,image/jpeg,image/gif,image/webp,application/pdf,"
    "text/plain,text/markdown,text/csv,application/json"
)


def check_table_prefix(value: str) -> str:
    """`value` if it can be put before our table names as is; ValueError otherwise.

    Spelled into DDL and SQL unquoted, so only names every database takes as written;
    SQLite keeps `sqlite_` for its own tables."""
    if value and (not re.fullmatch(r"[a-z][a-z0-9_]{0,29}", value) or value.startswith("sqlite_")):
        raise ValueError(
            "TABLE_PREFIX must be 1-30 lowercase letters, digits or _, starting with a "
            f"letter and not with sqlite_ (e.g. chatkit_), not {value[:40]!r}"
        )
    return value


TablePrefix = Annotated[str, AfterValidator(check_table_prefix)]


def _is_ipv6(name: str) -> bool:
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return True


class Settings(BaseSettings):
    """One place for every setting; names match the environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        # A failed start outside the CLI (uvicorn, create_app) prints the error: without
        # this, pydantic quotes the input, secrets included (`input_value={...}`).
        hide_input_in_errors=True,
    )

    env: Literal["development", "production"] = "development"
    database_url: str = DEFAULT_DATABASE_URL
    # Serve migrates a database whose schema is behind, instead of refusing to start.
    migrate_on_start: bool = False
    database_pool_size: int = Field(default=10, ge=1, le=500)
    # Put before each of our table and index names (`chatkit_` gives `chatkit_threads`...),
    # so they cannot meet an app's own tables in a database we share with it.
    table_prefix: TablePrefix = ""

    llm_provider: Provider | None = None
    llm_api: ModelApi | None = None
    llm_model: str | None = None
    llm_allowed_models: Annotated[list[str], NoDecode] = []
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    gemini_api_key: SecretStr | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    agents_tracing: bool = False
    offline_token_delay_ms: int = Field(default=15, ge=0, le=10_000)
    agent: str = "assistant"
    input_guardrail_max_chars: int = Field(default=8000, ge=1)
    titles: bool = True

    # `host`: an app that includes our routers says who calls (ChatKitBackend(identify=)).
    auth_mode: Literal["none", "jwt", "host"] = "none"
    local_user_id: str = "local"
    local_tenant_id: str = "local"
    jwt_secret: SecretStr | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwt_tenant_claim: str = "tenant_id"
    jwt_default_tenant: str | None = None
    jwt_role_claim: str = "role"
    # exp - iat; unset: no cap. Providers' lifetimes differ (Auth0's API tokens: 24 h).
    jwt_max_lifetime_seconds: int | None = Field(default=None, ge=60, le=365 * 86400)
    # Production refuses JWKS without JWT_AUDIENCE unless this says the provider has none.
    jwt_audience_optional: bool = False
    cors_origins: str | None = None
    # Failed and missing credentials per client address; past it 429 before any check.
    failed_auth_per_minute: int = Field(default=30, ge=0, le=1_000_000)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn's default).
    trusted_proxies: Annotated[list[str], NoDecode] = ["127.0.0.1"]
    # Host names this server answers to; unset: loopback ones with AUTH_MODE=none, any with jwt.
    allowed_hosts: str | None = None

    # The page at GET /: the ChatKit element when its script loads, else the built-in client.
    web_ui: Literal["auto", "chatkit", "builtin", "off"] = "auto"
    login_url: str | None = None
    chatkit_domain_key: str = "local-dev"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None
    # /docs, /redoc and /openapi.json; unset: on in development, off in production.
    api_docs: bool | None = None
    sse_keepalive_seconds: float = Field(default=15.0, gt=0, le=300)
    shutdown_grace_seconds: float = Field(default=25.0, ge=0, le=3600)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_page_size: int = Field(default=100, ge=1, le=1000)
    history_items: int = Field(default=30, ge=1, le=1000)
    max_message_chars: int = Field(default=20_000, ge=1, le=1_000_000)
    rate_limit_per_minute: int = Field(default=120, ge=1, le=1_000_000)
    max_streams_per_user: int = Field(default=3, ge=1, le=1000)
    # Where the limits above (and uploads', failed sign-ins') are counted: unset, in each
    # process; a Redis URL, once for every worker and replica that shares it.
    redis_url: SecretStr | None = None
    # Every key this server writes starts with it: several deployments can share a Redis.
    redis_key_prefix: str = Field(default="chatkit:", min_length=1, max_length=100)
    # With Redis away: allow (open, logged once) or refuse with 503 (closed).
    redis_failure: Literal["open", "closed"] = "open"
    # Admission control (chat/admission.py): streams past these are refused with 503.
    max_open_streams: int = Field(default=1500, ge=1, le=100_000)
    max_waiting_streams: int = Field(default=1000, ge=1, le=100_000)
    stream_lag_limit_seconds: float = Field(default=10.0, ge=0, le=600)

    attachments_dir: str = "./data/attachments"
    max_attachment_bytes: int = Field(default=20 * 1024 * 1024, ge=1, le=5 * 1024**3)
    allowed_attachment_types: Annotated[list[str], NoDecode] = DEFAULT_ATTACHMENT_TYPES.split(",")
    attachment_url_ttl_seconds: int = Field(default=3600, ge=10, le=7 * 86400)
    attachment_upload_ttl_seconds: int = Field(default=900, ge=10, le=86400)
    attachment_unsent_ttl_hours: int = Field(default=24, ge=1, le=24 * 365)
    # On by default: unsent files would otherwise stay until someone runs `cleanup`.
    attachment_cleanup_interval_seconds: int = Field(default=600, ge=0, le=7 * 86400)
    # Per user, across workers (counted in the database): what one member may keep.
    attachment_quota_unsent_count: int = Field(default=20, ge=1, le=1_000_000)
    attachment_quota_unsent_bytes: int = Field(default=100 * 1024**2, ge=1, le=1024**5)
    attachment_quota_total_bytes: int = Field(default=1024**3, ge=1, le=1024**5)
    attachment_uploads_per_minute: int = Field(default=20, ge=0, le=1_000_000)
    # Files of earlier messages re-sent whole to the model each turn (attachments/model_input.py).
    model_attachments_whole: int = Field(default=3, ge=0, le=1000)
    model_attachment_bytes: int = Field(default=10 * 1024 * 1024, ge=0, le=5 * 1024**3)
    attachment_signing_key: SecretStr | None = None
    public_url: str | None = None
    # Where attachment bytes live: ATTACHMENTS_DIR, or an S3-compatible bucket that every
    # replica shares (attachments/s3_storage.py).
    attachment_storage: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    # The folder in the bucket that belongs to this server: the cleanup deletes objects
    # there that no attachment owns.
    s3_prefix: str = "attachments"
    # MinIO, R2 and other S3-compatible stores; unset: AWS.
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # What `serve` holds a connection to before the app has a request (ops/transport.py).
    # A JWT in a header may be ~8 KiB; cookies of a shared domain come on top.
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=10, le=10_000)
    header_timeout_seconds: float = Field(default=20.0, gt=0, le=3600)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=4096, ge=2, le=1_000_000)

    @field_validator("database_url")
    @classmethod
    def _async_database_url(cls, value: str) -> str:
        # Messages name the setting, never the value: the URL may hold a password.
        scheme, separator, rest = value.strip().partition("://")
        driver = DATABASE_DRIVERS.get(scheme.lower())
        if not separator or not scheme:
            raise ValueError(f"DATABASE_URL is not a database URL; use {DATABASE_URL_SHAPES}")
        if driver is None:
            raise ValueError(
                f"DATABASE_URL names a database or driver this server does not support; "
                f"use {DATABASE_URL_SHAPES}"
            )
        try:
            url = make_url(f"{driver}://{rest}")
        except (ArgumentError, ValueError):
            raise ValueError(
                f"DATABASE_URL is not a valid URL; use {DATABASE_URL_SHAPES}"
            ) from None
        if driver == "postgresql+asyncpg" and "sslmode" in url.query:
            # libpq's spelling, in most providers' URLs; asyncpg takes the same values as `ssl`.
            url = url.difference_update_query(["sslmode"]).update_query_dict(
                {"ssl": url.query["sslmode"]}
            )
            return url.render_as_string(hide_password=False)
        return f"{driver}://{rest}"

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_in_any_case(cls, value: object) -> object:
        # uvicorn and Python's logging docs spell levels in lower case.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        # Named, never quoted: the URL may hold a password.
        if value is None:
            return None
        url = value.get_secret_value().strip()
        scheme, separator, rest = url.partition("://")
        try:
            if not separator or not rest or scheme.lower() not in ("redis", "rediss", "unix"):
                raise ValueError
            parse_redis_url(url)
        except ValueError:
            raise ValueError(
                "REDIS_URL is not a Redis URL; use redis://[:password@]host:6379/0, "
                "rediss://... (TLS) or unix:///path/to/redis.sock"
            ) from None
        return SecretStr(url)

    @field_validator("redis_key_prefix")
    @classmethod
    def _printable_prefix(cls, value: str) -> str:
        if not value.isprintable() or any(c.isspace() for c in value):
            raise ValueError("REDIS_KEY_PREFIX must be printable, without spaces")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _long_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        # A scraper's bearer token; short ones can be guessed over the network.
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("METRICS_TOKEN must be at least 16 characters")
        return value

    @field_validator("allowed_attachment_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            names = (str(name).strip().lower() for name in value)
            return list(dict.fromkeys(name for name in names if name))
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, _, rest = value.strip().rstrip("/").partition("://")
        if scheme not in ("http", "https") or not rest or rest.startswith("/") or "?" in rest:
            raise ValueError("PUBLIC_URL looks like https://chat.example.com[/prefix]")
        return f"{scheme}://{rest}"

    @field_validator("login_url")
    @classmethod
    def _login_url(cls, value: str | None) -> str | None:
        # The page navigates there: only web addresses, never `javascript:` or `data:`.
        ok = value is None or value.startswith(("https://", "http://", "/"))
        if not ok or (value or "").startswith("//"):
            raise ValueError("LOGIN_URL looks like https://login.example.com/... or /login")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list):
            return value
        proxies = []
        for entry in (str(item).strip() for item in value):
            if entry == "*":
                proxies.append(entry)
            elif entry:
                try:
                    network = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(
                        "TRUSTED_PROXIES entries look like 10.0.0.5, 10.0.0.0/8 or *"
                    ) from None
                # A single address as uvicorn compares it: as an address, not a /32.
                single = network.num_addresses == 1 and "/" not in entry
                proxies.append(str(network.network_address) if single else str(network))
        return proxies

    @field_validator("llm_allowed_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _fail_fast(self) -> "Settings":
        if self.llm_provider == "openai" and self.openai_api_key is None:
            raise ValueError("LLM_PROVIDER=openai needs OPENAI_API_KEY")
        if self.llm_provider == "gemini" and self.gemini_api_key is None:
            raise ValueError("LLM_PROVIDER=gemini needs GEMINI_API_KEY")
        if self.llm_provider == "openai-compatible" and self.llm_base_url is None:
            raise ValueError("LLM_PROVIDER=openai-compatible needs LLM_BASE_URL")
        return self

    @property
    def resolved_provider(self) -> Provider:
        """The provider in use: explicit, else `openai` when a key is set, else `offline`."""
        if self.llm_provider is not None:
            return self.llm_provider
        return "openai" if self.openai_api_key is not None else "offline"

    @property
    def model_api(self) -> ModelApi:
        """Responses or Chat Completions: as set, else the provider's default."""
        return self.llm_api or PROVIDER_DEFAULTS[self.resolved_provider][1]

    @property
    def model_name(self) -> str:
        """The model asked for when the composer names none."""
        return self.llm_model or PROVIDER_DEFAULTS[self.resolved_provider][0]

    @property
    def allowed_models(self) -> frozenset[str]:
        """Models the composer may pick: the configured list plus the default model."""
        return frozenset([*self.llm_allowed_models, self.model_name])

    @property
    def docs_enabled(self) -> bool:
        """Whether /docs, /redoc and /openapi.json are served: API_DOCS, else in development."""
        return self.api_docs if self.api_docs is not None else self.env == "development"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def cors_origin_list(self) -> list[str] | None:
        """CORS_ORIGINS split on commas, trailing slashes dropped; None when unset."""
        if self.cors_origins is None:
            return None
        origins = (origin.strip().rstrip("/") for origin in self.cors_origins.split(","))
        return [origin for origin in origins if origin]

    @property
    def allowed_host_list(self) -> list[str] | None:
        """ALLOWED_HOSTS split on commas, lower-cased, IPv6 brackets dropped; None when unset."""
        if self.allowed_hosts is None:
            return None
        hosts = (host.strip().lower() for host in self.allowed_hosts.split(","))
        return [host.removeprefix("[").removesuffix("]") for host in hosts if host]

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: str | None) -> str | None:
        # Names only: a scheme, path or port here would silently match nothing.
        if value is None:
            return None
        names = [host.strip().removeprefix("[").removesuffix("]") for host in value.split(",")]
        for name in names:
            if ("/" in name or " " in name or ":" in name) and not _is_ipv6(name):
                raise ValueError("ALLOWED_HOSTS entries look like chat.example.com (no port)")
        if not any(names):
            raise ValueError("ALLOWED_HOSTS names no host")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> "Settings":
        # Messages name settings, never values: the CLI shows them on a failed start.
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else None
        # HS256 keys shorter than the hash (32 bytes) are brute-forceable; PyJWT agrees.
        if secret is not None and len(secret.encode()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 bytes")
        if self.auth_mode == "jwt" and secret is None and self.jwt_jwks_url is None:
            raise ValueError("AUTH_MODE=jwt needs JWT_SECRET or JWT_JWKS_URL")
        for origin in self.cors_origin_list or []:
            scheme, _, host = origin.partition("://")
            if origin != "*" and (scheme not in ("http", "https") or not host or "/" in host):
                raise ValueError("CORS_ORIGINS entries look like https://app.example.com")
        if self.env != "production":
            return self
        if self.auth_mode == "none":
            raise ValueError("ENV=production needs AUTH_MODE=jwt (or host, when embedded)")
        # Long but repetitive ("changeme" four times) is still guessable.
        if secret is not None and len(set(secret)) < 10:
            raise ValueError("JWT_SECRET is too weak; use a random one (openssl rand -hex 32)")
        if self.jwt_jwks_url is not None and not self.jwt_jwks_url.startswith("https://"):
            raise ValueError("ENV=production needs an https:// JWT_JWKS_URL")
        if "*" in (self.cors_origin_list or []):
            raise ValueError("ENV=production refuses a wildcard CORS_ORIGINS")
        return self

    @model_validator(mode="after")
    def _check_attachment_quotas(self) -> "Settings":
        # A quota smaller than one file would refuse the largest files no matter what.
        if self.attachment_quota_unsent_bytes < self.max_attachment_bytes:
            raise ValueError("ATTACHMENT_QUOTA_UNSENT_BYTES must be at least MAX_ATTACHMENT_BYTES")
        if self.attachment_quota_total_bytes < self.max_attachment_bytes:
            raise ValueError("ATTACHMENT_QUOTA_TOTAL_BYTES must be at least MAX_ATTACHMENT_BYTES")
        return self

    @model_validator(mode="after")
    def _check_attachment_key(self) -> "Settings":
        # Signed attachment URLs carry no token: whoever knows the key can mint them.
        key = self.attachment_signing_key
        secret = key.get_secret_value() if key is not None else None
        if secret is not None and len(secret.encode()) < 32:
            raise ValueError("ATTACHMENT_SIGNING_KEY must be at least 32 bytes")
        # One leaked key would then both forge tokens and sign links.
        if self.jwt_secret is not None and secret == self.jwt_secret.get_secret_value():
            raise ValueError("ATTACHMENT_SIGNING_KEY must differ from JWT_SECRET")
        if self.env != "production":
            return self
        # Workers and replicas must agree on it, so production cannot make one up.
        if secret is None:
            raise ValueError("ENV=production needs ATTACHMENT_SIGNING_KEY (openssl rand -hex 32)")
        if len(set(secret)) < 10:
            raise ValueError("ATTACHMENT_SIGNING_KEY is too weak; use openssl rand -hex 32")
        return self

    @field_validator("s3_prefix")
    @classmethod
    def _s3_prefix(cls, value: str) -> str:
        # A folder, not a pattern: no empty, `.` or `..` segments for a store to resolve.
        prefix = value.strip().strip("/")
        segments = prefix.split("/") if prefix else []
        if any(part in ("", ".", "..") for part in segments) or any(
            ord(ch) < 32 or ch in "\\?#*" for ch in prefix
        ):
            raise ValueError("S3_PREFIX looks like attachments or chatkit/attachments")
        return prefix

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, _, rest = value.strip().rstrip("/").partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest or "?" in rest:
            raise ValueError("S3_ENDPOINT_URL looks like https://minio.example.com:9000")
        return f"{scheme}://{rest}"

    @model_validator(mode="after")
    def _check_attachment_storage(self) -> "Settings":
        # Messages name settings, never values: the CLI shows them on a failed start.
        if self.attachment_storage != "s3":
            return self
        if not self.s3_bucket or not self.s3_bucket.strip():
            raise ValueError("ATTACHMENT_STORAGE=s3 needs S3_BUCKET")
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together: set both, or "
                "neither to use the role the server runs with"
            )
        return self

    @model_validator(mode="after")
    def _check_connections(self) -> "Settings":
        # Each stream holds a connection: below the streams' cap, a burst would get the
        # connection cap's refusals and admission control would never act.
        if self.max_connections <= self.max_open_streams:
            raise ValueError("MAX_CONNECTIONS must be above MAX_OPEN_STREAMS")
        return self

    @model_validator(mode="after")
    def _check_production(self) -> "Settings":
        # What production must not fall back to: open metrics, links that follow the
        # caller's Host header, a sign-in page over plain http, any audience's tokens.
        if self.env != "production":
            return self
        if self.metrics_enabled and self.metrics_token is None:
            raise ValueError("ENV=production needs METRICS_TOKEN, or METRICS_ENABLED=false")
        if self.public_url is None:
            raise ValueError("ENV=production needs PUBLIC_URL, the URL browsers reach it at")
        if self.login_url is not None and self.login_url.startswith("http://"):
            raise ValueError("ENV=production needs an https:// (or relative) LOGIN_URL")
        if self.jwt_jwks_url is not None and self.jwt_audience is None:
            if not self.jwt_audience_optional:
                raise ValueError(
                    "ENV=production with JWT_JWKS_URL needs JWT_AUDIENCE "
                    "(or JWT_AUDIENCE_OPTIONAL=true and JWT_ISSUER)"
                )
            if self.jwt_issuer is None:
                raise ValueError("JWT_AUDIENCE_OPTIONAL=true needs JWT_ISSUER")
        return self


class _TablePrefixOnly(BaseSettings):
    model_config = Settings.model_config
    table_prefix: TablePrefix = ""


def table_prefix_setting() -> str:
    """TABLE_PREFIX, read as `Settings` reads it but alone: the migrations need nothing
    else, and must not fail on settings that only the server checks."""
    return _TablePrefixOnly().table_prefix
