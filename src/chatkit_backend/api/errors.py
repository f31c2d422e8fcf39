"""The JSON error envelope every failure uses."""

from collections.abc import Mapping

from fastapi.responses import JSONResponse

from chatkit_backend.ops.metrics import count_error


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """`{"error": {"code", "message"}}`, plus a top-level `message` the web client shows."""
    count_error(code)
    body = {"error": {"code": code, "message": message}, "message": message}
    response = JSONResponse(body, status_code=status, headers=headers)
    # Also set here: a 500 is sent from outside every middleware, the headers one included.
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
