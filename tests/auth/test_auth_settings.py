"""Minting development tokens, and the settings ENV=production refuses to start with."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from chatkit_backend.settings import Settings
from tests.support.auth import LINK_KEY, SECRET, jwt_settings, production_overrides
from tests.support.processes import run_cli

# ---- minting ----


def test_token_command_mints_a_token_the_server_accepts() -> None:
    env = {"JWT_SECRET": SECRET, "JWT_ISSUER": "dev", "JWT_AUDIENCE": "chatkit"}
    result = run_cli(
        "token", "--user", "alice", "--tenant", "acme", "--role", "viewer", "--ttl", "2h", env=env
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], audience="chatkit", issuer="dev")
    assert (payload["sub"], payload["tenant_id"], payload["role"]) == ("alice", "acme", "viewer")
    lifetime = payload["exp"] - datetime.now(UTC).timestamp()
    assert 7100 < lifetime <= 7200
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_token_command_needs_a_secret_and_a_sane_ttl() -> None:
    result = run_cli("token", "--user", "alice", env={"JWT_SECRET": ""})
    assert result.returncode != 0 and "JWT_SECRET" in result.stderr and not result.stdout
    result = run_cli("token", "--user", "alice", "--ttl", "forever", env={"JWT_SECRET": SECRET})
    assert result.returncode == 2 and not result.stdout


# ---- production settings fail fast ----


STRONG = "f3a9c0d27be14e58a6d1c9b0e2f47a3d5c8e1b6a"


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"auth_mode": "none"}, "AUTH_MODE=jwt"),
        ({"auth_mode": "jwt"}, "JWT_SECRET or JWT_JWKS_URL"),
        ({"auth_mode": "jwt", "jwt_secret": "short"}, "at least 32 bytes"),
        ({"auth_mode": "jwt", "jwt_secret": "changeme" * 4}, "too weak"),
        ({"auth_mode": "jwt", "jwt_secret": STRONG, "cors_origins": "*"}, "wildcard"),
        (
            {"auth_mode": "jwt", "jwt_secret": STRONG, "cors_origins": "https://a.example, *"},
            "wildcard",
        ),
        ({"auth_mode": "jwt", "jwt_jwks_url": "http://idp.example/jwks"}, "https://"),
        ({"auth_mode": "jwt", "jwt_secret": STRONG}, "needs ATTACHMENT_SIGNING_KEY"),
        (
            {"auth_mode": "jwt", "jwt_secret": STRONG, "attachment_signing_key": "ab" * 32},
            "ATTACHMENT_SIGNING_KEY is too weak",
        ),
    ],
)
def test_production_refuses_unsafe_settings(settings: dict[str, Any], complaint: str) -> None:
    assert_refused({"env": "production", **settings}, complaint)


def assert_refused(settings: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **settings)  # type: ignore[call-arg]
    # What the CLI prints: the reasons, without the input values.
    reasons = " ".join(e["msg"] for e in caught.value.errors(include_input=False))
    assert complaint in reasons
    for name in ("jwt_secret", "attachment_signing_key", "metrics_token", "login_url"):
        secret = settings.get(name)
        assert secret is None or secret not in reasons


JWKS = {"auth_mode": "jwt", "jwt_jwks_url": "https://idp.example/.well-known/jwks.json"}
HS256 = {"auth_mode": "jwt", "jwt_secret": STRONG}


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        # /metrics would be open to anyone.
        ({"metrics_token": None}, "needs METRICS_TOKEN, or METRICS_ENABLED=false"),
        # Links would follow the caller's Host header.
        ({"public_url": None}, "needs PUBLIC_URL"),
        # The token the login page hands back would cross the network in the clear.
        ({"login_url": "http://login.example.com/authorize"}, "https:// (or relative) LOGIN_URL"),
    ],
)
def test_production_refuses_open_metrics_host_links_and_plain_http_login(
    changes: dict[str, Any], complaint: str
) -> None:
    assert_refused(production_overrides(**HS256, **changes), complaint)


def test_production_refuses_jwks_tokens_of_any_audience() -> None:
    # Tokens the same provider minted for another application would be accepted.
    assert_refused(production_overrides(**JWKS), "JWT_JWKS_URL needs JWT_AUDIENCE")
    # Opting out (a provider whose tokens carry no aud) still pins the issuer.
    optional = production_overrides(**JWKS, jwt_audience_optional=True)
    assert_refused(optional, "JWT_AUDIENCE_OPTIONAL=true needs JWT_ISSUER")
    for accepted in (
        production_overrides(**JWKS, jwt_audience="chatkit"),
        production_overrides(**JWKS, jwt_audience_optional=True, jwt_issuer="https://idp"),
        {**JWKS, "env": "development"},  # development only warns in the docs
    ):
        assert Settings(_env_file=None, **accepted).jwt_jwks_url  # type: ignore[call-arg]


def test_one_key_for_tokens_and_links_is_refused_everywhere() -> None:
    for env in ("development", "production"):
        same = production_overrides(**HS256, env=env, attachment_signing_key=STRONG)
        assert_refused(same, "ATTACHMENT_SIGNING_KEY must differ from JWT_SECRET")


def test_production_accepts_safe_settings() -> None:
    for extra in (
        {**HS256, "cors_origins": "https://app.example.com/"},
        {**JWKS, "jwt_audience": "chatkit", "login_url": "/login"},
        {**HS256, "metrics_token": None, "metrics_enabled": False},
        {**HS256, "login_url": "https://login.example.com/authorize"},
    ):
        settings = Settings(_env_file=None, **production_overrides(**extra))  # type: ignore[call-arg]
        assert settings.auth_mode == "jwt"
        assert not settings.docs_enabled
    assert jwt_settings(
        "sqlite+aiosqlite:///x", cors_origins="https://a.example/"
    ).cors_origin_list == ["https://a.example"]


def test_api_docs_default_to_development_only() -> None:
    assert jwt_settings("sqlite+aiosqlite:///x").docs_enabled
    assert not jwt_settings("sqlite+aiosqlite:///x", api_docs=False).docs_enabled
    production = jwt_settings("sqlite+aiosqlite:///x", **production_overrides(api_docs=True))
    assert production.docs_enabled


def test_trusted_proxies_are_addresses_or_networks() -> None:
    settings = jwt_settings(
        "sqlite+aiosqlite:///x", trusted_proxies=" 10.0.0.5, 10.1.2.3/8 ,fd00::/64, ::1,*"
    )
    assert settings.trusted_proxies == ["10.0.0.5", "10.0.0.0/8", "fd00::/64", "::1", "*"]
    assert jwt_settings("sqlite+aiosqlite:///x").trusted_proxies == ["127.0.0.1"]
    for bad in ("proxy.internal", "10.0.0.0/33", "10.0.0.5:8080"):
        assert_refused({"trusted_proxies": bad}, "TRUSTED_PROXIES entries look like")


def test_development_refuses_short_secrets_and_odd_origins_too() -> None:
    for bad in (
        {"jwt_secret": "dev"},
        {"cors_origins": "app.example.com"},
        {"attachment_signing_key": "short"},
        {"public_url": "chat.example.com"},
    ):
        with pytest.raises(ValidationError):
            jwt_settings("sqlite+aiosqlite:///x", **bad)


def test_the_cli_refuses_to_start_and_does_not_echo_the_secret(tmp_path: Path) -> None:
    weak = "changeme" * 4
    result = run_cli("migrate", env={"ENV": "production", "AUTH_MODE": "jwt", "JWT_SECRET": weak})
    assert result.returncode == 2
    assert "JWT_SECRET is too weak" in result.stderr
    assert weak not in result.stderr + result.stdout
    result = run_cli("migrate", env={"ENV": "production", "AUTH_MODE": "none"})
    assert result.returncode == 2 and "AUTH_MODE=jwt" in result.stderr
    # Were they accepted, only a throwaway database would be touched.
    safe = {
        "ENV": "production",
        "AUTH_MODE": "jwt",
        "JWT_SECRET": STRONG,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'refused.db'}",
    }
    result = run_cli("migrate", env={**safe, "ATTACHMENT_SIGNING_KEY": STRONG})
    assert result.returncode == 2 and "must differ from JWT_SECRET" in result.stderr
    assert STRONG not in result.stderr + result.stdout
    result = run_cli("migrate", env={**safe, "ATTACHMENT_SIGNING_KEY": LINK_KEY})
    assert result.returncode == 2 and "needs METRICS_TOKEN" in result.stderr
