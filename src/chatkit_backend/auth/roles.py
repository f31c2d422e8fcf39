"""The role vocabulary and what each role may do.

- `viewer`: reads their own threads and items; changes nothing.
- `member`: the default; everything the protocol offers on their own data.
- `admin`: as `member` for now; reserved for operations endpoints.

No role reaches another user's data: ownership is enforced by every store query.
"""

from collections.abc import Iterable
from typing import Final

from chatkit_backend.errors import Forbidden

VIEWER: Final = "viewer"
MEMBER: Final = "member"
ADMIN: Final = "admin"
# Least to most powerful: when a token lists several roles, the strongest known wins.
ROLES: Final = (VIEWER, MEMBER, ADMIN)
DEFAULT_ROLE: Final = MEMBER

# What a viewer may send. An allowlist, so request types added to the SDK later are
# refused for viewers until someone decides otherwise. Feedback is a write: refused.
READ_TYPES: Final = frozenset({"threads.get_by_id", "threads.list", "items.list"})
_WRITERS: Final = frozenset({MEMBER, ADMIN})


def role_from_claim(value: object) -> str:
    """Map a role claim (a string or a list of strings) onto the vocabulary.

    Names outside it (Supabase's `authenticated`, Keycloak's `offline_access`) say
    nothing about this server and are ignored; no known name means `member`.
    """
    names: Iterable[object]
    if isinstance(value, str):
        names = [value]
    elif isinstance(value, list | tuple):
        names = value
    else:
        return DEFAULT_ROLE
    known = {name.strip().lower() for name in names if isinstance(name, str)} & set(ROLES)
    if not known:
        return DEFAULT_ROLE
    return max(known, key=ROLES.index)


def authorize(request_type: str, role: str) -> None:
    """Raise `Forbidden` when `role` may not send `request_type`."""
    # Fail closed: a role outside the vocabulary can only read.
    if role in _WRITERS or request_type in READ_TYPES:
        return
    raise Forbidden(f"The {role} role may read conversations but not send {request_type}")
