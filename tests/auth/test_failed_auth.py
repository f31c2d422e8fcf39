"""Failed authentication, limited per client address: bad tokens, bad signed links and
bad metrics tokens; X-Forwarded-For believed only from TRUSTED_PROXIES."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from chatkit_backend.chat.limits import FailedAuthLimiter, address_key
from chatkit_backend.errors import TooManyRequests
from tests.support.attachments import PNG, uploaded
from tests.support.auth import (
    METRICS_TOKEN,
    SECRET,
    JwtApp,
    claims,
    forge,
    hmac_signer,
    jwt_app,
    new_user,
)
from tests.support.chat_client import ChatClient, assert_envelope
from tests.support.processes import run_cli, serving

ATTACKER = "203.0.113.7"
NEIGHBOUR = "198.51.100.20"
LIST = {"type": "threads.list", "params": {}}
BAD_TOKEN = forge({"alg": "HS256", "typ": "JWT"}, claims(), hmac_signer(b"not-the-secret" * 3))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def client_at(
    app: JwtApp, address: str, token: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose requests come from `address`, as a server's scope says."""
    transport = httpx.ASGITransport(app=app.app, client=(address, 40000))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers, timeout=30
    ) as http:
        yield http


def assert_limited(response: httpx.Response) -> None:
    assert_envelope(response, 429, "rate_limited")
    assert 1 <= int(response.headers["retry-after"]) <= 60


# ---- the limiter ----


def test_addresses_are_counted_per_ipv4_address_and_per_ipv6_64() -> None:
    assert address_key(ATTACKER) == ATTACKER
    # One subscriber holds a whole /64: each of its addresses is the same caller.
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key(f"::ffff:{ATTACKER}") == ATTACKER
    assert address_key(None) == address_key("") == "unknown"


def test_only_failures_use_up_an_address_bucket() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(per_minute=3, clock=clock)  # one every 20 s
    for _ in range(10):  # requests whose credentials held give their token back
        limiter.admit(ATTACKER)
        limiter.release(ATTACKER)
    for _ in range(3):
        limiter.admit(ATTACKER)
    with pytest.raises(TooManyRequests) as caught:
        limiter.admit(ATTACKER)
    assert caught.value.retry_after_seconds == 20
    limiter.admit(NEIGHBOUR)  # each address has its own bucket
    clock.now += 20
    limiter.admit(ATTACKER)
    off = FailedAuthLimiter(per_minute=0, clock=clock)
    for _ in range(1000):
        off.admit(ATTACKER)


# ---- over HTTP, in process ----


async def test_bad_tokens_from_one_address_are_limited_and_nobody_else_is(
    sqlite_database_url: str,
) -> None:
    async with jwt_app(sqlite_database_url, failed_auth_per_minute=3) as app:
        good = (await app.client(new_user())).http.headers["authorization"]
        async with (
            client_at(app, ATTACKER, BAD_TOKEN) as attacker,
            client_at(app, ATTACKER) as attacker_without_token,
            client_at(app, NEIGHBOUR, BAD_TOKEN) as neighbour_bad,
            client_at(app, NEIGHBOUR) as neighbour,
        ):
            for _ in range(3):
                assert_envelope(await attacker.post("/chatkit", json=LIST), 401, "unauthorized")
            assert_limited(await attacker.post("/chatkit", json=LIST))
            # Past the limit nothing from the address is looked at, no token or any token.
            assert_limited(await attacker_without_token.post("/chatkit", json=LIST))
            response = await attacker.post("/chatkit", json=LIST, headers={"Authorization": good})
            assert_limited(response)
            # Another address: its failures are its own, and a good token works.
            response = await neighbour_bad.post("/chatkit", json=LIST)
            assert_envelope(response, 401, "unauthorized")
            neighbour.headers["Authorization"] = good
            assert (await ChatClient(neighbour).call("threads.list"))["data"] == []
            # Health checks need no credentials and are never limited.
            assert (await attacker.get("/healthz")).status_code == 200


async def test_good_tokens_never_use_up_the_limit(sqlite_database_url: str) -> None:
    async with jwt_app(sqlite_database_url, failed_auth_per_minute=3) as app:
        token = (await app.client(new_user())).http.headers["authorization"].split()[1]
        async with client_at(app, ATTACKER, token) as good, client_at(app, ATTACKER) as none:
            for _ in range(20):
                assert (await good.post("/chatkit", json=LIST)).status_code == 200
            for _ in range(3):
                assert_envelope(await none.post("/chatkit", json=LIST), 401, "unauthorized")
            assert_limited(await none.post("/chatkit", json=LIST))


async def test_bad_signed_links_are_limited_per_address(sqlite_database_url: str) -> None:
    async with jwt_app(sqlite_database_url, failed_auth_per_minute=3) as app:
        owner = await app.client(new_user())
        preview = (await uploaded(owner, "cat.png", PNG, "image/png"))["preview_url"]
        path = preview.removeprefix("http://testserver")
        forged = path.split("sig=")[0] + "sig=" + "A" * 43
        async with client_at(app, ATTACKER) as attacker, client_at(app, NEIGHBOUR) as neighbour:
            for _ in range(3):
                assert_envelope(await attacker.get(forged), 403, "forbidden")
            assert_limited(await attacker.get(forged))
            assert_limited(await attacker.get(path))  # the signature is not even checked
            response = await neighbour.get(path)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("image/")


async def test_bad_metrics_tokens_are_limited_per_address(sqlite_database_url: str) -> None:
    token = METRICS_TOKEN
    async with jwt_app(sqlite_database_url, failed_auth_per_minute=3, metrics_token=token) as app:
        async with client_at(app, ATTACKER, "wrong" * 4) as attacker:
            for _ in range(3):
                assert_envelope(await attacker.get("/metrics"), 401, "unauthorized")
            assert_limited(await attacker.get("/metrics"))
        async with client_at(app, NEIGHBOUR, token) as scraper:
            assert (await scraper.get("/metrics")).status_code == 200


# ---- over a real socket: X-Forwarded-For from trusted proxies only ----


def bad_token_from(base_url: str, forwarded_for: str) -> int:
    headers = {"Authorization": f"Bearer {BAD_TOKEN}", "X-Forwarded-For": forwarded_for}
    response = httpx.post(f"{base_url}/chatkit", json=LIST, headers=headers, timeout=30)
    return response.status_code


@pytest.mark.slow
def test_forwarded_for_counts_only_behind_a_trusted_proxy(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'proxies.db'}",
        "AUTH_MODE": "jwt",
        "JWT_SECRET": SECRET,
        "FAILED_AUTH_PER_MINUTE": "2",
    }
    assert run_cli("migrate", env=env).returncode == 0
    # The tests' requests come from 127.0.0.1: here a trusted proxy. Each forwarded
    # client has its own bucket, and only the nearest untrusted hop counts, so
    # entries a client writes further left change nothing.
    with serving({**env, "TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}) as server:
        url = server.base_url
        assert [bad_token_from(url, f"{n}.6.6.6, {ATTACKER}") for n in range(1, 4)] == [
            401,
            401,
            429,
        ]
        assert bad_token_from(url, NEIGHBOUR) == 401
    # Here 127.0.0.1 is no proxy of ours: the header is the client's own invention, and
    # a new made-up address per request does not escape the limit.
    with serving({**env, "TRUSTED_PROXIES": "192.0.2.1"}) as server:
        url = server.base_url
        assert [bad_token_from(url, f"198.51.100.{n}") for n in range(1, 4)] == [401, 401, 429]
