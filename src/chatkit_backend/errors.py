"""Failures a client can cause, each with the HTTP status it maps to."""


class RequestError(Exception):
    """A request the server refuses; `message` is safe to show the client."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


class NotEnabled(RequestError):
    """The feature the request needs is switched off on this server."""

    code = "not_enabled"


class NotSupported(RequestError):
    """The server does not implement this request type."""

    status = 501
    code = "not_implemented"
