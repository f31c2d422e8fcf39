"""Failures a client can cause, each with the HTTP status it maps to."""


class RequestError(Exception):
    """A request the server refuses; `message` is safe to show the client."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # Response headers the status needs (`WWW-Authenticate`, `Retry-After`).
        self.headers: dict[str, str] = {}


class InvalidRequest(RequestError):
    """The body is not a valid ChatKit request."""


class UnknownType(RequestError):
    """The `type` is not a ChatKit request type."""

    code = "unknown_type"


class NotFound(RequestError):
    """The thread, item or attachment does not exist for this caller."""

    status = 404
    code = "not_found"


class PayloadTooLarge(RequestError):
    """The body is over the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    """The file's type is not accepted, or its content is not what it claims to be."""

    status = 415
    code = "unsupported_media_type"


class Conflict(RequestError):
    """The request does not fit the record's state (an upload that already arrived)."""

    status = 409
    code = "conflict"


class NotEnabled(RequestError):
    """The feature the request needs is switched off on this server."""

    code = "not_enabled"


class NotSupported(RequestError):
    """The server does not implement this request type."""

    status = 501
    code = "not_implemented"


class Unauthorized(RequestError):
    """No bearer token, or one that does not verify."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, token_given: bool = True) -> None:
        super().__init__(message)
        # RFC 6750: a bare challenge when no token came, `invalid_token` when one failed.
        self.headers["WWW-Authenticate"] = (
            'Bearer error="invalid_token"' if token_given else "Bearer"
        )


class Forbidden(RequestError):
    """The caller's role does not allow this request type."""

    status = 403
    code = "forbidden"


class TooManyRequests(RequestError):
    """The caller is over a rate or concurrency limit."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, retry_after_seconds)
        self.headers["Retry-After"] = str(self.retry_after_seconds)


class AuthUnavailable(RequestError):
    """The identity provider's keys cannot be fetched, so no token can be checked."""

    status = 503
    code = "auth_unavailable"


class ThreadBusy(RequestError):
    """The thread is still answering an earlier message; one answer at a time."""

    status = 409
    code = "thread_busy"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        # A stopped answer frees its thread within moments: a hint for scripted clients.
        self.headers["Retry-After"] = "1"


class Unavailable(RequestError):
    """The server cannot take this now (shutting down, database away); retry shortly."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, code: str, retry_after_seconds: int = 2) -> None:
        super().__init__(message)
        self.code = code
        self.headers["Retry-After"] = str(retry_after_seconds)
