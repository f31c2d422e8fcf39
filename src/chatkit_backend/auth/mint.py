"""Minting HS256 tokens for development and curl (`chatkit-backend token`)."""

import re
from datetime import UTC, datetime, timedelta

import jwt

from chatkit_backend.settings import Settings

_TTL = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_ttl(text: str) -> timedelta:
    """`90s`, `15m`, `1h` or `7d`."""
    match = _TTL.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"a lifetime looks like 90s, 15m, 1h or 7d, not {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def mint_token(
    settings: Settings,
    *,
    user: str,
    tenant: str,
    role: str | None = None,
    ttl: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> str:
    """A token this server accepts, signed with JWT_SECRET, with its issuer and audience."""
    if settings.jwt_secret is None:
        raise ValueError("minting needs JWT_SECRET")
    cap = settings.jwt_max_lifetime_seconds
    if cap is not None and ttl.total_seconds() > cap:
        raise ValueError(f"the lifetime is over JWT_MAX_LIFETIME_SECONDS ({cap} s)")
    issued = now or datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": user,
        settings.jwt_tenant_claim: tenant,
        "iat": issued,
        "exp": issued + ttl,
    }
    if role is not None:
        claims[settings.jwt_role_claim] = role
    if settings.jwt_issuer is not None:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience is not None:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")
