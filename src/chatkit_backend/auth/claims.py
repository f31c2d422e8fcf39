"""From verified claims to the request context every query is scoped to."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatkit_backend.auth.roles import role_from_claim
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import Unauthorized

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
    return RequestContext(user_id=user_id, tenant_id=tenant_id, role=role)
