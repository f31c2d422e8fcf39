"""Bearer-token verification with PyJWT: HS256 with a shared secret, RS256/ES256 via JWKS.

The token's `alg` picks the key source, and each source has one fixed kind of key:
HS256 only ever uses `JWT_SECRET`, RS256/ES256 only ever use a JWKS key of that same
algorithm. So `alg: none` and algorithm confusion (an HS256 token "signed" with the
provider's public key) have no key to verify against.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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

from chatkit_backend.auth.jwks import JWKSCache
from chatkit_backend.auth.roles import role_from_claim
from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.errors import Unauthorized
from chatkit_backend.settings import Settings

# The store's user_id and tenant_id columns hold this many characters.
MAX_ID_LENGTH = 255


@dataclass(frozen=True, slots=True)
class ClaimNames:
    """Where the tenant and role are found, and the tenant when a token names none."""

    tenant: str = "tenant_id"
    role: str = "role"
    default_tenant: str | None = None


def claim(claims: Mapping[str, Any], name: str) -> object:
    """`claims[name]`, else the dotted path `a.b.c` through nested objects.

    The exact name comes first: Auth0's namespaced claims are URLs with dots in them.
    """
    if name in claims:
        return claims[name]
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _identifier(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and _storable(value):
        return value
    return None


def _storable(value: str) -> bool:
    # Every query binds the ids: PostgreSQL refuses NUL in a text parameter, and UTF-8
    # has no encoding for a lone surrogate (both decode from a token's JSON): a 500.
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def context_from_claims(claims: Mapping[str, Any], names: ClaimNames) -> RequestContext:
    """User from `sub`, tenant and role from the configured claims."""
    user_id = _identifier(claims.get("sub"))
    if user_id is None:
        raise Unauthorized("The token has no usable subject (sub)")
    raw_tenant = claim(claims, names.tenant)
    if raw_tenant is None and names.default_tenant is not None:
        raw_tenant = names.default_tenant
    tenant_id = _identifier(raw_tenant)
    if tenant_id is None:
        raise Unauthorized(f"The token has no usable {names.tenant} claim")
    role = role_from_claim(claim(claims, names.role))
    return RequestContext(Owner(tenant_id=tenant_id, user_id=user_id), role=role)


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
    # The longest exp - iat accepted; None: any. Set, a token must carry iat.
    max_lifetime_seconds: int | None = None
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
                    "require": ["exp", "sub", *(["iat"] if rules.max_lifetime_seconds else [])],
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
        # A stolen token that never expires stays stolen; PyJWT has checked both are numbers.
        cap = rules.max_lifetime_seconds
        if cap is not None and int(claims["exp"]) - int(claims["iat"]) > cap:
            raise _rejected("The token lives longer than this server accepts", "lifetime")
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
        max_lifetime_seconds=settings.jwt_max_lifetime_seconds,
        claims=ClaimNames(
            tenant=settings.jwt_tenant_claim,
            role=settings.jwt_role_claim,
            default_tenant=settings.jwt_default_tenant,
        ),
    )
    return TokenVerifier(secret=secret, jwks=jwks, rules=rules)
