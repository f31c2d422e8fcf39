"""Who is asking: the owner every query, limit and file is scoped to, and the request."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose records these are: one user of one tenant."""

    tenant_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The caller of one request: the SDK's `TContext`, handed to the store and agents."""

    owner: Owner
    role: str = "member"
    # Where the caller reached us (`https://host/prefix/`), for the absolute links to
    # attachments a browser follows without a token; None outside HTTP. A fact of the
    # transport, not of the identity: nothing is scoped by it.
    base_url: str | None = None
