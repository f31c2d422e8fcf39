"""Logs: what the current request is (ids and types, never content), and the set-up
that writes it on every line, as readable text or JSON, never with a stack trace."""

import json
import logging
import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chatkit_backend.context import Owner

# Accepted from a proxy's X-Request-ID as is; anything else (too long, spaces, quotes,
# newlines that could forge log lines) is replaced by an id of our own.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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
    owner: Owner | None = None
    # How a stream ended (completed, error, cancelled, drained); None for JSON answers.
    outcome: str | None = None

    def log_fields(self) -> dict[str, str]:
        """The fields a log line carries, in this order; unknown ones left out."""
        owner = self.owner
        values = {
            "request_id": self.request_id,
            "chatkit_type": self.chatkit_type,
            "thread_id": self.thread_id,
            "tenant_id": owner.tenant_id if owner else None,
            "user_id": owner.user_id if owner else None,
        }
        return {name: value for name, value in values.items() if value is not None}


# Set per request by the API layer's middleware. Tasks started during the request
# (the stream's producer, the Agents SDK's run) copy the context, so they see the same
# object and its later updates.
current_request: ContextVar[RequestInfo | None] = ContextVar("current_request", default=None)


def current() -> RequestInfo | None:
    return current_request.get()


# Extras a log call may add (the access line does); others are left out, so a stray
# `extra={"text": ...}` cannot put message content into the logs.
EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "outcome")


class NoTracebacks(logging.Filter):
    """Drops exception details: tracebacks can carry message content and secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.msg} ({record.exc_info[0].__name__})"
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request's ids (from the context) and the allowed extras on this record."""
    info = current()
    fields: dict[str, Any] = info.log_fields() if info is not None else {}
    for name in EXTRA_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = value
    return fields


# What could forge a line or hide part of one in a terminal: C0 and C1 controls (line
# breaks, ESC that starts ANSI sequences, DEL), Unicode line separators, bidi overrides.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A field value written bare: printable ASCII but space, `"`, `=` and backslash.
_BARE_VALUE = re.compile(r"[!#-<>-\[\]-~]+")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """`text` on one line, its control characters written as escapes (`\\n`, `\\x1b`)."""
    if text.isascii() and text.isprintable():
        return text  # nearly every line: no regex pass
    return _CONTROLS.sub(_escaped, text)


def field_value(value: object) -> str:
    """A value as `key=value` shows it: bare, or quoted when a space, `"` or `=` in it
    could pass for another field (`thread_id=x user_id=root`)."""
    text = str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, for people reading a terminal.

    One record is one line: whatever a client managed to put in a path, an id or a
    message (`%0a` and a fake line after it) is escaped, never written raw.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = escape_controls(super().format(record))
        fields = record_fields(record)
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={field_value(value)}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (LOG_FORMAT=json); `json.dumps` writes
    every control and non-ASCII character as an escape, so no value can break a line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        return json.dumps(document, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Root handler with the filter; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(NoTracebacks())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic announces each of its plugins on import; the migrations it runs are news.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # At DEBUG, aiosqlite logs each statement with its parameters: message content.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The app writes its own access line (api/middleware.py), with ids and timing.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
