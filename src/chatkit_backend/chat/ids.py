"""What an id can look like: checked before it reaches a query, a log line or an error.

Ours are `prefix_` and 32 hex characters (`store/sql_store.py` `new_id`); the SDK's
defaults and older ones are shorter, same alphabet. Anything else exists nowhere, so it
is refused with a 400 before the lookup: PostgreSQL refuses NUL in a text parameter (a
500), a 900 KB id was logged and echoed whole, and a newline in one forged log lines.
"""

import re
from collections.abc import Iterator

from chatkit.types import ChatKitReq, UserMessageInput

from chatkit_backend.errors import InvalidRequest

MAX_ID_LENGTH = 128
_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}")

# The params fields that name a stored record (`after` is a thread's or an item's id).
_ID_FIELDS = ("thread_id", "item_id", "attachment_id", "after")


def is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def check_id(value: str, field: str) -> None:
    """Refuse `value` with a 400 naming `field`, never echoing the value."""
    if not is_id(value):
        raise InvalidRequest(
            f"{field} is not a valid id: at most {MAX_ID_LENGTH} letters, digits, _ or -"
        )


def check_request_ids(request: ChatKitReq) -> None:
    """Every id a ChatKit request names, checked before any handler sees it."""
    for field, value in _ids(request):
        check_id(value, field)


def _ids(request: ChatKitReq) -> Iterator[tuple[str, str]]:
    params = request.params
    for field in _ID_FIELDS:
        value = getattr(params, field, None)
        if isinstance(value, str):
            yield field, value
    for value in getattr(params, "item_ids", ()):
        yield "item_ids", value
    message = getattr(params, "input", None)
    if isinstance(message, UserMessageInput):
        for value in message.attachments:
            yield "input.attachments", value
