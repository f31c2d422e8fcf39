"""What the current request is, for log lines and metrics: ids and types, never content."""

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass

# Accepted from a proxy's X-Request-ID as is; anything else (too long, spaces, quotes,
# newlines that could forge log lines) is replaced by an id of our own.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# The fields a log line carries, in this order.
LOG_FIELDS = ("request_id", "chatkit_type", "thread_id", "tenant_id", "user_id")


def request_id_from(header: str | None) -> str:
    """The caller's request id when it is safe to log, else a new random one."""
    if header and _SAFE_REQUEST_ID.fullmatch(header):
        return header
    return secrets.token_hex(16)


@dataclass(slots=True)
class RequestInfo:
    """Filled in as the request is understood: the id first, then who and what."""

    request_id: str
    chatkit_type: str | None = None
    thread_id: str | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    # How a stream ended (completed, error, cancelled, drained); None for JSON answers.
    outcome: str | None = None

    def log_fields(self) -> dict[str, str]:
        values = {name: getattr(self, name) for name in LOG_FIELDS}
        return {name: value for name, value in values.items() if value is not None}


# Set per request by the API layer's middleware. Tasks started during the request
# (the stream's producer, the Agents SDK's run) copy the context, so they see the same
# object and its later updates.
current_request: ContextVar[RequestInfo | None] = ContextVar("current_request", default=None)


def current() -> RequestInfo | None:
    return current_request.get()
