"""Which types are accepted, and what an upload really is: its claim checked by its content.

A client's claim (the declared type, or the extension when that is generic or known to
misfire, like `.ts` as video/mp2t) is checked against what the bytes are:

- PNG, JPEG, GIF, WebP and PDF must be what their magic numbers say; an image claimed
  as another image format is stored as what it is.
- Text-like claims (txt, md, csv, json, code) need valid UTF-8 text. A text type not in
  the allowed list is stored as `text/plain` when that is allowed.
- Other allowed types (when an operator lists, say, `application/zip`) must at least not
  look like one of the types above.
"""

from collections.abc import Collection
from pathlib import PurePosixPath
from typing import Final

from chatkit_backend.attachments import sniffing
from chatkit_backend.errors import UnsupportedMediaType

PLAIN_TEXT: Final = "text/plain"
GENERIC: Final = frozenset({"", "application/octet-stream", "binary/octet-stream"})
IMAGES: Final = frozenset({sniffing.PNG, sniffing.JPEG, sniffing.GIF, sniffing.WEBP})
_TEXT_APPLICATION_TYPES: Final = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/typescript",
        "application/x-sh",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/sql",
        "application/x-python",
        "application/ld+json",
    }
)
# Extensions whose declared type browsers get wrong or leave empty.
EXTENSION_TYPES: Final = {
    ".txt": PLAIN_TEXT,
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".json": "application/json",
    ".py": "text/x-python",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".ts": "text/x-typescript",
    ".tsx": "text/x-typescript",
    ".jsx": "text/javascript",
    ".go": "text/x-go",
    ".rs": "text/x-rust",
    ".java": "text/x-java",
    ".kt": "text/x-kotlin",
    ".c": "text/x-c",
    ".h": "text/x-c",
    ".cpp": "text/x-c++",
    ".cs": "text/x-csharp",
    ".rb": "text/x-ruby",
    ".php": "text/x-php",
    ".sh": "text/x-shellscript",
    ".sql": "text/x-sql",
    ".yaml": "text/yaml",
    ".yml": "text/yaml",
    ".toml": "text/x-toml",
    ".log": PLAIN_TEXT,
    ".png": sniffing.PNG,
    ".jpg": sniffing.JPEG,
    ".jpeg": sniffing.JPEG,
    ".gif": sniffing.GIF,
    ".webp": sniffing.WEBP,
    ".pdf": sniffing.PDF,
}


def normalise(mime_type: str) -> str:
    """`Text/Plain; charset=utf-8` -> `text/plain`."""
    return mime_type.split(";", 1)[0].strip().lower()


def is_text_like(mime_type: str) -> bool:
    # Not image/svg+xml: an image that can carry scripts is refused, not kept as text.
    return (
        mime_type.startswith("text/")
        or mime_type in _TEXT_APPLICATION_TYPES
        or (mime_type.startswith("application/") and mime_type.endswith(("+json", "+xml")))
    )


def is_image(mime_type: str) -> bool:
    return mime_type in IMAGES


def claimed_type(declared: str, name: str) -> str:
    """What the client says the file is: the declared type, unless it is generic or a
    non-text type on a file whose extension says text (browsers call `.ts` video)."""
    declared = normalise(declared)
    by_extension = EXTENSION_TYPES.get(PurePosixPath(name.lower()).suffix)
    if by_extension is None:
        return declared
    if declared in GENERIC or (is_text_like(by_extension) and not is_text_like(declared)):
        return by_extension
    return declared


def accepted_claim(claim: str, allowed: Collection[str]) -> str:
    """The type to record for a claim, before the bytes are seen; 415 if none is allowed."""
    if claim in allowed:
        return claim
    if is_text_like(claim) and PLAIN_TEXT in allowed:
        return PLAIN_TEXT
    shown = claim or "untyped"
    raise UnsupportedMediaType(f"{shown[:100]} files are not accepted here")


def verified_type(content: str, claim: str, allowed: Collection[str]) -> str:
    """The type to store, given what the sniffer found (`content`); 415 on a mismatch.

    `claim` is a generic type or the result of `accepted_claim`.
    """
    if content in (*IMAGES, sniffing.PDF):
        if claim in GENERIC or claim == content or (is_image(claim) and is_image(content)):
            return accepted_claim(content, allowed)
        raise UnsupportedMediaType(f"The file's content is {content}, not {claim}")
    if content == sniffing.TEXT:
        if claim in GENERIC:
            return accepted_claim(PLAIN_TEXT, allowed)
        if is_text_like(claim):
            return accepted_claim(claim, allowed)
        raise UnsupportedMediaType(f"The file's content is text, not {claim}")
    if claim in GENERIC:
        raise UnsupportedMediaType("The file's type could not be recognised")
    if is_text_like(claim):
        raise UnsupportedMediaType(f"The file is not UTF-8 text, so not {claim}")
    if is_image(claim) or claim == sniffing.PDF:
        raise UnsupportedMediaType(f"The file's content is not {claim}")
    return accepted_claim(claim, allowed)
