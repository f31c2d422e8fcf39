"""Minting development tokens, and the settings ENV=production refuses to start with."""

from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from chatkit_backend.settings import Settings
from tests.support.auth import SECRET, jwt_settings
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
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, env="production", **settings)  # type: ignore[call-arg]
    # What the CLI prints: the reasons, without the input values.
    reasons = " ".join(e["msg"] for e in caught.value.errors(include_input=False))
    assert complaint in reasons
    for name in ("jwt_secret", "attachment_signing_key"):
        secret = settings.get(name)
        assert secret is None or secret not in reasons


def test_production_accepts_safe_settings() -> None:
    for extra in (
        {"jwt_secret": STRONG, "cors_origins": "https://app.example.com/"},
        {"jwt_jwks_url": "https://idp.example/.well-known/jwks.json"},
    ):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            env="production",
            auth_mode="jwt",
            attachment_signing_key=STRONG,
            **extra,
        )
        assert settings.auth_mode == "jwt"
    assert jwt_settings(
        "sqlite+aiosqlite:///x", cors_origins="https://a.example/"
    ).cors_origin_list == ["https://a.example"]


def test_development_refuses_short_secrets_and_odd_origins_too() -> None:
    for bad in (
        {"jwt_secret": "dev"},
        {"cors_origins": "app.example.com"},
        {"attachment_signing_key": "short"},
        {"public_url": "chat.example.com"},
    ):
        with pytest.raises(ValidationError):
            jwt_settings("sqlite+aiosqlite:///x", **bad)


def test_the_cli_refuses_to_start_and_does_not_echo_the_secret() -> None:
    weak = "changeme" * 4
    result = run_cli("migrate", env={"ENV": "production", "AUTH_MODE": "jwt", "JWT_SECRET": weak})
    assert result.returncode == 2
    assert "JWT_SECRET is too weak" in result.stderr
    assert weak not in result.stderr + result.stdout
    result = run_cli("migrate", env={"ENV": "production", "AUTH_MODE": "none"})
    assert result.returncode == 2 and "AUTH_MODE=jwt" in result.stderr
