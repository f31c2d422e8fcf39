"""Bearer tokens: what verifies, what does not, and how refusals look over HTTP."""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from chatkit_backend.app import create_app
from chatkit_backend.auth.mint import parse_ttl
from chatkit_backend.auth.tokens import ClaimNames, TokenRules, TokenVerifier
from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.errors import Unauthorized
from chatkit_backend.settings import Settings
from tests.support.auth import (
    SECRET,
    claims,
    forge,
    hmac_signer,
    jwt_app,
    new_user,
    token_for,
)
from tests.support.chat_client import assert_envelope
from tests.support.sse import user_input

OTHER_SECRET = "another-secret-that-is-long-enough-0123456789"


def verifier(**rules: Any) -> TokenVerifier:
    names = rules.pop("names", ClaimNames())
    return TokenVerifier(secret=SECRET.encode(), jwks=None, rules=TokenRules(claims=names, **rules))


def hs256(payload: dict[str, Any], key: str = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, key, algorithm="HS256", headers=headers or None)


async def rejected(token: str, check: TokenVerifier | None = None) -> str:
    with pytest.raises(Unauthorized) as caught:
        await (check or verifier()).verify(token)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    return caught.value.message


# ---- the verifier ----


async def test_a_valid_token_gives_user_tenant_and_default_role() -> None:
    context = await verifier().verify(hs256(claims("alice", "acme")))
    assert context == RequestContext(Owner(tenant_id="acme", user_id="alice"), role="member")


@pytest.mark.parametrize(
    ("value", "role"),
    [
        ("viewer", "viewer"),
        ("Admin", "admin"),
        ("authenticated", "member"),  # Supabase: says nothing about this server
        (["offline_access", "viewer"], "viewer"),  # Keycloak-style list
        (["viewer", "admin"], "admin"),  # the strongest known role wins
        ({"nested": "admin"}, "member"),
        (7, "member"),
    ],
)
async def test_role_claim_maps_onto_the_vocabulary(value: object, role: str) -> None:
    context = await verifier().verify(hs256(claims(role=value)))
    assert context.role == role


async def test_claim_names_are_configurable_with_dotted_paths_and_urls() -> None:
    names = ClaimNames(tenant="org.id", role="https://example.com/roles")
    payload = claims(org={"id": 42}, **{"https://example.com/roles": ["viewer"]})
    context = await verifier(names=names).verify(hs256(payload))
    assert (context.owner.tenant_id, context.role) == ("42", "viewer")


async def test_missing_tenant_is_refused_unless_a_default_is_set() -> None:
    payload = claims()
    del payload["tenant_id"]
    assert "tenant_id" in await rejected(hs256(payload))
    fallback = verifier(names=ClaimNames(default_tenant="solo"))
    assert (await fallback.verify(hs256(payload))).owner.tenant_id == "solo"


@pytest.mark.parametrize("missing", ["sub", "exp"])
async def test_sub_and_exp_are_required(missing: str) -> None:
    payload = claims()
    del payload[missing]
    await rejected(hs256(payload))


# NUL and lone surrogates decode from a token's JSON but break every query that binds them.
@pytest.mark.parametrize("sub", ["", "x" * 256, True, None, "a\x00b", "\ud800"])
async def test_unusable_subjects_are_refused(sub: object) -> None:
    await rejected(hs256(claims(sub=sub)))


async def test_expired_tokens_are_refused_after_the_leeway() -> None:
    now = datetime.now(UTC)
    expired = hs256(claims(exp=int((now - timedelta(minutes=5)).timestamp())))
    assert await rejected(expired) == "The token has expired"
    just_expired = hs256(claims(exp=int((now - timedelta(seconds=5)).timestamp())))
    assert (await verifier(leeway_seconds=30).verify(just_expired)).owner.user_id == "mallory"
    await rejected(just_expired, verifier(leeway_seconds=0))


async def test_tokens_not_valid_yet_are_refused() -> None:
    later = int((datetime.now(UTC) + timedelta(minutes=10)).timestamp())
    await rejected(hs256(claims(nbf=later)))


async def test_a_token_signed_with_another_key_is_refused() -> None:
    assert await rejected(hs256(claims(), key=OTHER_SECRET)) == "The token is not valid"


async def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = hs256(claims("alice")).split(".")
    forged_payload = forge({}, claims("root"), None).split(".")[1]
    await rejected(f"{header}.{forged_payload}.{signature}")


async def test_issuer_and_audience_are_checked_when_set() -> None:
    strict = verifier(issuer="https://idp.example", audience="chatkit")
    good = claims(iss="https://idp.example", aud="chatkit")
    assert (await strict.verify(hs256(good))).owner.user_id == "mallory"
    for bad in (
        {**good, "iss": "https://evil.example"},
        {**good, "aud": "another-app"},
        {k: v for k, v in good.items() if k != "aud"},
        {k: v for k, v in good.items() if k != "iss"},
    ):
        assert await rejected(hs256(bad), strict) == "The token is not for this server"
    # Unset, they are not checked: any audience passes.
    assert (await verifier().verify(hs256(good))).owner.user_id == "mallory"


async def test_a_lifetime_cap_refuses_long_lived_tokens_and_tokens_without_iat() -> None:
    capped = verifier(max_lifetime_seconds=3600)
    now = int(datetime.now(UTC).timestamp())
    hour = hs256(claims(iat=now, exp=now + 3600))
    assert (await capped.verify(hour)).owner.user_id == "mallory"
    day = hs256(claims(iat=now, exp=now + 86400))
    assert await rejected(day, capped) == "The token lives longer than this server accepts"
    # Back-dating iat does not help: a token issued long ago is as long-lived.
    old = hs256(claims(iat=now - 86400, exp=now + 60))
    assert await rejected(old, capped) == "The token lives longer than this server accepts"
    no_iat = claims(exp=now + 60)
    del no_iat["iat"]
    assert await rejected(hs256(no_iat), capped) == "The token has no iat claim"
    # Without a cap, neither matters.
    assert (await verifier().verify(day)).owner.user_id == "mallory"
    assert (await verifier().verify(hs256(no_iat))).owner.user_id == "mallory"


async def test_the_lifetime_cap_holds_over_http_and_for_minted_tokens(
    sqlite_database_url: str,
) -> None:
    async with jwt_app(sqlite_database_url, jwt_max_lifetime_seconds=3600) as app:
        now = int(datetime.now(UTC).timestamp())
        day = hs256(claims(new_user(), iat=now, exp=now + 86400))
        http = await app.raw({"Authorization": f"Bearer {day}"})
        response = await http.post("/chatkit", json={"type": "threads.list", "params": {}})
        assert_envelope(response, 401, "unauthorized")
        client = await app.client(new_user())  # `token_for` mints one-hour tokens
        await client.call("threads.list")
        with pytest.raises(ValueError, match="JWT_MAX_LIFETIME_SECONDS"):
            token_for(app.settings, "alice", ttl=timedelta(hours=2))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
async def test_alg_none_is_refused(alg: str) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, claims(), None)
    assert await rejected(token) == "The token's algorithm is not accepted"


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS256", "ES256", "PS256"])
async def test_only_hs256_is_accepted_without_a_jwks(alg: str) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, claims(), hmac_signer(SECRET.encode()))
    assert await rejected(token) == "The token's algorithm is not accepted"


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b.c", "a.b", "....", "eyJhbGciOiJIUzI1NiJ9.e30", "x" * 9000]
)
async def test_malformed_tokens_are_refused(token: str) -> None:
    await rejected(token)


def test_ttl_parsing() -> None:
    assert parse_ttl("90s") == timedelta(seconds=90)
    assert parse_ttl("15m") == timedelta(minutes=15)
    assert parse_ttl("1h") == timedelta(hours=1)
    assert parse_ttl("7d") == timedelta(days=7)
    for bad in ("", "1", "0h", "1w", "-1h", "1.5h", "h"):
        with pytest.raises(ValueError):
            parse_ttl(bad)


# ---- over HTTP ----


async def test_requests_without_a_token_are_401_with_a_bearer_challenge(
    sqlite_database_url: str,
) -> None:
    async with jwt_app(sqlite_database_url) as app:
        http = await app.raw()
        body = {"type": "threads.list", "params": {}}
        response = await http.post("/chatkit", json=body)
        assert_envelope(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc"):
            response = await http.post("/chatkit", json=body, headers={"Authorization": header})
            assert_envelope(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        # Health checks stay open for load balancers.
        assert (await http.get("/healthz")).status_code == 200


async def test_auth_is_decided_before_the_body_is_read(sqlite_database_url: str) -> None:
    async with jwt_app(sqlite_database_url, max_body_bytes=2048) as app:
        http = await app.raw()
        response = await http.post("/chatkit", content=b"{" * 10_000)
        assert_envelope(response, 401, "unauthorized")


async def test_a_valid_token_scopes_threads_to_its_user_and_tenant(
    sqlite_database_url: str,
) -> None:
    async with jwt_app(sqlite_database_url) as app:
        user = new_user()
        alice = await app.client(user, "acme")
        thread_id, _ = await alice.new_thread("hello")
        store = app.app.state.services.store
        thread = await store.load_thread(thread_id, RequestContext(Owner("acme", user)))
        assert thread.id == thread_id
        again = await app.client(user, "acme")  # a fresh token for the same person
        assert [t["id"] for t in (await again.call("threads.list"))["data"]] == [thread_id]


async def test_refused_tokens_never_reach_logs_or_responses(
    sqlite_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with jwt_app(sqlite_database_url) as app:
        settings = app.settings
        expired = token_for(
            settings, "alice", ttl=timedelta(seconds=1), now=datetime(2020, 1, 1, tzinfo=UTC)
        )
        wrong_key = hs256(claims("alice"), key=OTHER_SECRET)
        valid = token_for(settings, new_user())
        http = await app.raw()
        for token in (expired, wrong_key, valid, "not-a-jwt-" + "s3cr3t" * 5):
            response = await http.post(
                "/chatkit",
                json={"type": "threads.create", "params": {"input": user_input("hi")}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert token not in response.text
            for part in token.split("."):
                assert part not in caplog.text
        assert "bearer token rejected: expired" in caplog.text


async def test_local_mode_warns_at_startup(
    sqlite_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    create_app(Settings(_env_file=None, database_url=sqlite_database_url))  # type: ignore[call-arg]
    assert any(
        r.levelno == logging.WARNING and "AUTH_MODE=none" in r.getMessage() for r in caplog.records
    )
