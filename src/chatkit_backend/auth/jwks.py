"""Signing keys from an identity provider's JWKS URL, cached and refetched with care.

Keys are cached for `max_age` seconds. A token naming an unknown `kid` (the provider
rotated its keys) triggers a refetch, but at most one per `cooldown` seconds: tokens
with made-up kids must not turn into a flood of requests to the provider.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable

import httpx
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

from chatkit_backend.errors import AuthUnavailable

logger = logging.getLogger(__name__)

MAX_JWKS_BYTES = 512 * 1024
FETCH_TIMEOUT_SECONDS = 5.0


class JWKSCache:
    """The current key set of one JWKS URL."""

    def __init__(
        self,
        url: str,
        *,
        max_age: float = 600.0,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.cooldown = cooldown
        self.clock = clock
        self.fetches = 0
        self._keys: list[PyJWK] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None, algorithm: str) -> PyJWK | None:
        """The key that verifies a token with this `kid` and `alg`, or None if unknown."""
        if self._keys is None or self.clock() - self._fetched_at >= self.max_age:
            await self._refresh(reason="initial" if self._keys is None else "expired")
        if self._keys is None:
            raise AuthUnavailable("The identity provider's signing keys are unavailable")
        key = self._find(kid, algorithm)
        if key is None and self._may_refetch():
            await self._refresh(reason="unknown kid")
            key = self._find(kid, algorithm)
        return key

    def _find(self, kid: str | None, algorithm: str) -> PyJWK | None:
        usable = [
            key
            for key in self._keys or []
            # The key's own algorithm must be the token's: no RS256 key for an ES256
            # token, and never a symmetric key from a JWKS.
            if key.algorithm_name == algorithm and key.public_key_use in (None, "sig")
        ]
        if kid is not None:
            return next((key for key in usable if key.key_id == kid), None)
        # No kid: acceptable only when the choice is unambiguous.
        return usable[0] if len(usable) == 1 else None

    def _may_refetch(self) -> bool:
        return self._attempted_at is None or self.clock() - self._attempted_at >= self.cooldown

    async def _refresh(self, reason: str) -> None:
        """Fetch the key set unless one was tried within `cooldown`; never raises."""
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted or not self._may_refetch():
                return  # another request fetched while this one waited, or too soon
            now = self._attempted_at = self.clock()
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError, PyJWKError, PyJWKSetError) as exc:
                # Keep the keys we have: a provider outage should not log everyone out.
                logger.warning("JWKS fetch failed (%s): %s", reason, type(exc).__name__)
                return
            self._keys = keys
            self._fetched_at = now
            logger.info("JWKS fetched (%s): %d keys", reason, len(keys))

    async def _fetch(self) -> list[PyJWK]:
        self.fetches += 1
        async with (
            httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as client,
            client.stream("GET", self.url, headers={"Accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS document too large")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("JWKS document is not an object")
        return list(PyJWKSet.from_dict(document))
