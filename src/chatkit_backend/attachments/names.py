"""File names from clients, made safe to store, show, and send back in a header."""

import re
import unicodedata
from urllib.parse import quote

MAX_NAME_LENGTH = 200
FALLBACK_NAME = "file"
# Characters that are path separators or special somewhere (Windows, shells, headers).
_UNSAFE = set('\\/"<>:|?*')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)


def safe_name(name: str) -> str:
    """The last path component, without control or direction-override characters,
    unsafe punctuation or surrounding dots and spaces, at most 200 characters with
    the extension kept. Never empty."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[\\/]", name)[-1]
    # Category C covers controls and format characters such as U+202E, which can make
    # `exe.txt` display as `txt.exe`.
    kept = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in _UNSAFE)
    kept = " ".join(kept.split()).strip(" .")
    if not kept:
        return FALLBACK_NAME
    if _WINDOWS_RESERVED.match(kept):
        kept = f"_{kept}"
    if len(kept) > MAX_NAME_LENGTH:
        stem, dot, extension = kept.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            kept = stem[: MAX_NAME_LENGTH - len(extension) - 1].rstrip(" .") + "." + extension
        else:
            kept = kept[:MAX_NAME_LENGTH]
    return kept


def content_disposition(disposition: str, name: str) -> str:
    """`inline` or `attachment` with the name for old clients (ASCII) and new (RFC 6266)."""
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    ascii_name = ascii_name.replace("\\", "_").replace('"', "_")
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
