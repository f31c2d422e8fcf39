"""Bearer-token verification with PyJWT: HS256 with a shared secret, RS256/ES256 via JWKS.

The token's `alg` picks the key source, and each source has one fixed kind of key:
HS256 only ever uses `JWT_SECRET`, RS256/ES256 only ever use a JWKS key of that same
algorithm. So `alg: none` and algorithm confusion (an HS256 token "signed" with the
provider's public key) have no key to verify against.
"""

import logging
from dataclasses import dataclass, field

import jwt
from jwt import PyJWK
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    MissingRequiredClaimError,
    PyJWTError,
)

from chatkit_backend.auth.claims import ClaimNames, context_from_claims
from chatkit_backend.auth.jwks import JWKSCache
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import Unauthorized
from chatkit_backend.settings import Settings

logger = logging.getLogger(__name__)

SYMMETRIC = "HS256"
ASYMMETRIC = frozenset({"RS256", "ES256"})
# Far above any real token; refuses absurd headers before any parsing.
MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What a valid token must say besides its signature."""

    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = 30
    claims: ClaimNames = field(default_factory=ClaimNames)


class TokenVerifier:
    """Turns a bearer token into a `RequestContext`, or raises `Unauthorized`."""

    def __init__(self, *, secret: bytes | None, jwks: JWKSCache | None, rules: TokenRules) -> None:
        if secret is None and jwks is None:
            raise ValueError("a token verifier needs a secret, a JWKS URL, or both")
        self.secret = secret
        self.jwks = jwks
        self.rules = rules

    async def verify(self, token: str) -> RequestContext:
        if len(token) > MAX_TOKEN_CHARS:
            raise _rejected("The token is too long", "oversized")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise _rejected("The token is malformed", type(exc).__name__) from None
        key = await self._key(header.get("alg"), header.get("kid"))
        rules = self.rules
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[header["alg"]],
                issuer=rules.issuer,
                audience=rules.audience,
                leeway=rules.leeway_seconds,
                options={
                    "require": ["exp", "sub"],
                    # Checked when configured: with none, any audience is accepted.
                    "verify_aud": rules.audience is not None,
                    "enforce_minimum_key_length": True,
                },
            )
        except ExpiredSignatureError:
            raise _rejected("The token has expired", "expired") from None
        except ImmatureSignatureError:
            raise _rejected("The token is not valid yet", "immature") from None
        except (InvalidIssuerError, InvalidAudienceError) as exc:
            raise _rejected("The token is not for this server", type(exc).__name__) from None
        except MissingRequiredClaimError as exc:
            if exc.claim in ("iss", "aud"):
                raise _rejected("The token is not for this server", f"no {exc.claim}") from None
            raise _rejected(f"The token has no {exc.claim} claim", f"no {exc.claim}") from None
        except PyJWTError as exc:
            raise _rejected("The token is not valid", type(exc).__name__) from None
        return context_from_claims(claims, rules.claims)

    async def _key(self, algorithm: object, kid: object) -> bytes | PyJWK:
        if algorithm == SYMMETRIC and self.secret is not None:
            return self.secret
        if algorithm in ASYMMETRIC and self.jwks is not None:
            assert isinstance(algorithm, str)
            if kid is not None and not isinstance(kid, str):
                raise _rejected("The token is malformed", "kid")
            key = await self.jwks.key_for(kid, algorithm)
            if key is None:
                raise _rejected("The token's signing key is not known", "unknown kid")
            return key
        raise _rejected("The token's algorithm is not accepted", "algorithm")


def _rejected(message: str, reason: str) -> Unauthorized:
    # The reason only: never the token, which is a credential.
    logger.info("bearer token rejected: %s", reason)
    return Unauthorized(message)


def build_verifier(settings: Settings) -> TokenVerifier | None:
    """The verifier for AUTH_MODE=jwt; None in AUTH_MODE=none."""
    if settings.auth_mode != "jwt":
        return None
    secret = settings.jwt_secret.get_secret_value().encode() if settings.jwt_secret else None
    jwks = JWKSCache(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
    rules = TokenRules(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
        claims=ClaimNames(
            tenant=settings.jwt_tenant_claim,
            role=settings.jwt_role_claim,
            default_tenant=settings.jwt_default_tenant,
        ),
    )
    return TokenVerifier(secret=secret, jwks=jwks, rules=rules)
