"""RS256/ES256 tokens through a real JWKS endpoint: rotation, storms, outages, confusion."""

import asyncio
import secrets
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from chatkit_backend.auth.jwks import JWKSCache
from chatkit_backend.auth.tokens import TokenRules, TokenVerifier
from chatkit_backend.context import Owner
from chatkit_backend.errors import AuthUnavailable, Unauthorized
from tests.auth.jwks_server import JWKSServer, SigningKey, jwks_server
from tests.support.auth import SECRET, b64, claims, forge, hmac_signer, jwt_app

COOLDOWN = 30.0
MAX_AGE = 600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Any:
    with jwks_server() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_verifier(server: JWKSServer, clock: Clock, secret: bytes | None = None) -> TokenVerifier:
    cache = JWKSCache(server.url, max_age=MAX_AGE, cooldown=COOLDOWN, clock=clock)
    return TokenVerifier(secret=secret, jwks=cache, rules=TokenRules())


async def refused(check: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        await check.verify(token)
    return caught.value.message


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_tokens_verify_against_the_providers_keys(
    server: JWKSServer, clock: Clock, algorithm: str
) -> None:
    key = SigningKey.generate("k1", algorithm)
    server.publish(key)
    check = make_verifier(server, clock)
    context = await check.verify(key.sign(claims("alice", "acme", role="viewer")))
    assert context.owner == Owner("acme", "alice")
    assert context.role == "viewer"
    await check.verify(key.sign(claims("bob")))
    assert server.requests == 1  # cached


async def test_rotation_is_picked_up_by_a_refetch_after_the_cooldown(
    server: JWKSServer, clock: Clock
) -> None:
    old, new = SigningKey.generate("old"), SigningKey.generate("new", "ES256")
    server.publish(old)
    check = make_verifier(server, clock)
    await check.verify(old.sign(claims()))
    assert server.requests == 1

    # The provider rotates: it now publishes both, then signs with the new key.
    server.publish(old, new)
    clock.now += COOLDOWN
    assert (await check.verify(new.sign(claims("carol")))).owner.user_id == "carol"
    assert server.requests == 2
    await check.verify(old.sign(claims()))  # both keys are now known: no fetch
    await check.verify(new.sign(claims()))
    assert server.requests == 2

    # The old key is retired; once the cache ages out, it no longer verifies.
    server.publish(new)
    clock.now += MAX_AGE
    assert await refused(check, old.sign(claims())) == "The token's signing key is not known"
    await check.verify(new.sign(claims()))
    assert server.requests == 3


async def test_a_new_kid_within_the_cooldown_waits_for_it(server: JWKSServer, clock: Clock) -> None:
    first, second = SigningKey.generate("a"), SigningKey.generate("b")
    server.publish(first)
    check = make_verifier(server, clock)
    await check.verify(first.sign(claims()))
    server.publish(first, second)
    clock.now += COOLDOWN / 2
    await refused(check, second.sign(claims()))
    assert server.requests == 1
    clock.now += COOLDOWN / 2
    await check.verify(second.sign(claims()))
    assert server.requests == 2


async def test_unknown_kids_do_not_cause_a_refetch_storm(server: JWKSServer, clock: Clock) -> None:
    real = SigningKey.generate("real")
    server.publish(real)
    check = make_verifier(server, clock)
    await check.verify(real.sign(claims()))
    clock.now += COOLDOWN  # a refetch is allowed now, but only one

    async def attempt(index: int) -> None:
        impostor = SigningKey(f"kid-{index}-{secrets.token_hex(4)}", "RS256", real.private)
        await refused(check, impostor.sign(claims()))

    await asyncio.gather(*(attempt(i) for i in range(50)))
    for i in range(50, 100):
        await attempt(i)
    assert server.requests == 2
    await check.verify(real.sign(claims()))  # the real key still works, from cache
    assert server.requests == 2


async def test_a_provider_outage_keeps_cached_keys_and_is_not_hammered(
    server: JWKSServer, clock: Clock
) -> None:
    key = SigningKey.generate("k")
    server.status = 503
    check = make_verifier(server, clock)
    for _ in range(20):
        with pytest.raises(AuthUnavailable) as caught:
            await check.verify(key.sign(claims()))
        assert caught.value.status == 503
    assert server.requests == 1  # one try per cooldown, not one per request

    server.status = 200
    server.publish(key)
    clock.now += COOLDOWN
    await check.verify(key.sign(claims()))
    assert server.requests == 2

    server.status = 500
    clock.now += MAX_AGE  # the cache is stale and the refresh fails: keep the old keys
    await check.verify(key.sign(claims()))
    assert server.requests == 3


async def test_hs256_signed_with_the_public_key_is_refused(
    server: JWKSServer, clock: Clock
) -> None:
    key = SigningKey.generate("k")
    server.publish(key)
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_n = key.jwk()["n"].encode()
    for material in (pem, jwk_n):
        token = forge({"alg": "HS256", "kid": "k"}, claims(), hmac_signer(material))
        # JWKS only: HS256 has no key at all.
        jwks_only = make_verifier(server, clock)
        assert await refused(jwks_only, token) == "The token's algorithm is not accepted"
        # JWKS and a secret: HS256 uses the secret, never a JWKS key, so it fails.
        both = make_verifier(server, clock, secret=SECRET.encode())
        assert await refused(both, token) == "The token is not valid"


async def test_a_key_is_only_used_for_its_own_algorithm(server: JWKSServer, clock: Clock) -> None:
    rsa_key, ec_key = SigningKey.generate("rsa"), SigningKey.generate("ec", "ES256")
    server.publish(rsa_key, ec_key)
    symmetric = {"kty": "oct", "kid": "oct", "k": b64(b"k" * 32)}
    server.keys.append(symmetric)
    check = make_verifier(server, clock)
    # An ES256 token naming the RSA key's kid (and the other way round): no such key.
    wrong_pair = SigningKey("rsa", "ES256", ec_key.private)
    assert await refused(check, wrong_pair.sign(claims())) == "The token's signing key is not known"
    # A symmetric key that slipped into the JWKS is never used.
    token = forge({"alg": "HS256", "kid": "oct"}, claims(), hmac_signer(b"k" * 32))
    await refused(check, token)
    token = forge({"alg": "RS256", "kid": "oct"}, claims(), hmac_signer(b"k" * 32))
    await refused(check, token)


async def test_a_known_kid_with_another_private_key_is_refused(
    server: JWKSServer, clock: Clock
) -> None:
    key = SigningKey.generate("k")
    server.publish(key)
    impostor = SigningKey.generate("k")  # same kid, different key pair
    assert await refused(make_verifier(server, clock), impostor.sign(claims())) == (
        "The token is not valid"
    )


async def test_a_token_without_kid_needs_an_unambiguous_key(
    server: JWKSServer, clock: Clock
) -> None:
    key = SigningKey.generate("only")
    server.publish(key)
    token = forge_without_kid(key)
    assert (await make_verifier(server, clock).verify(token)).owner.user_id == "mallory"
    server.publish(key, SigningKey.generate("another"))
    await refused(make_verifier(server, clock), token)


def forge_without_kid(key: SigningKey) -> str:
    import jwt

    return jwt.encode(claims(), key.private, algorithm=key.algorithm)


async def test_jwks_over_http_end_to_end(server: JWKSServer, sqlite_database_url: str) -> None:
    key = SigningKey.generate("idp-1", "ES256")
    server.publish(key)
    async with jwt_app(
        sqlite_database_url, jwt_secret=None, jwt_jwks_url=server.url, jwt_audience="chatkit"
    ) as app:
        user = f"auth0|{secrets.token_hex(6)}"
        token = key.sign(claims(user, "acme", aud="chatkit"))
        http = await app.raw({"Authorization": f"Bearer {token}"})
        response = await http.post("/chatkit", json={"type": "threads.list", "params": {}})
        assert response.status_code == 200, response.text
        wrong_audience = key.sign(claims(user, "acme", aud="someone-else"))
        response = await http.post(
            "/chatkit",
            json={"type": "threads.list", "params": {}},
            headers={"Authorization": f"Bearer {wrong_audience}"},
        )
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "The token is not for this server"
