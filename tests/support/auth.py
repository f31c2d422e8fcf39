"""Apps in AUTH_MODE=jwt, clients carrying tokens, and hand-forged tokens for attacks."""

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from chatkit_backend.app import create_app
from chatkit_backend.auth.mint import mint_token
from chatkit_backend.settings import Settings
from tests.support.chat_client import ChatClient

SECRET = secrets.token_hex(32)


def jwt_settings(database_url: str, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "database_url": database_url,
        "offline_token_delay_ms": 0,
        "auth_mode": "jwt",
        "jwt_secret": SECRET,
        **overrides,
    }
    return Settings(_env_file=None, **options)


# Distinct from SECRET: production refuses one key for both tokens and links.
LINK_KEY = secrets.token_hex(32)
METRICS_TOKEN = secrets.token_hex(16)
PUBLIC_URL = "https://chat.example.com"


def production_overrides(**overrides: Any) -> dict[str, Any]:
    """Settings ENV=production starts with (HS256 tokens), changed by `overrides`."""
    return {
        "env": "production",
        "attachment_signing_key": LINK_KEY,
        "metrics_token": METRICS_TOKEN,
        "public_url": PUBLIC_URL,
        **overrides,
    }


def token_for(
    settings: Settings, user: str, tenant: str = "acme", role: str | None = None, **kw: Any
) -> str:
    return mint_token(settings, user=user, tenant=tenant, role=role, **kw)


class JwtApp:
    """One app; `client(...)` opens an HTTP client that sends a given user's token."""

    def __init__(self, app: FastAPI, settings: Settings, stack: AsyncExitStack) -> None:
        self.app = app
        self.settings = settings
        self._stack = stack

    async def raw(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        http = httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers or {}
        )
        return await self._stack.enter_async_context(http)

    async def client(self, user: str, tenant: str = "acme", role: str | None = None) -> ChatClient:
        token = token_for(self.settings, user, tenant, role)
        return ChatClient(await self.raw({"Authorization": f"Bearer {token}"}))


@asynccontextmanager
async def jwt_app(database_url: str, **overrides: Any) -> AsyncIterator[JwtApp]:
    settings = jwt_settings(database_url, **overrides)
    app = create_app(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        yield JwtApp(app, settings, stack)


def new_user() -> str:
    return f"user_{secrets.token_hex(6)}"


# ---- forging tokens by hand: PyJWT rightly refuses to make these ----


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(user: str = "mallory", tenant: str = "acme", **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "sub": user,
        "tenant_id": tenant,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
        **extra,
    }


def forge(
    header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes] | None
) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


def hmac_signer(key: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(key, data, hashlib.sha256).digest()
