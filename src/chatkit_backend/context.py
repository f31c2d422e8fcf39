"""Who is asking: the identity every store query and agent run is scoped to."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The caller of one request."""

    user_id: str
    tenant_id: str
    role: str = "member"
    # Where the caller reached us (`https://host/prefix/`), for the absolute links to
    # attachments a browser follows without a token; None outside HTTP.
    base_url: str | None = None
