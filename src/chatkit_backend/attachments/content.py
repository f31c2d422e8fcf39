"""What an upload is: its type by its bytes, checked against its claim, and a safe name.

The sniffer is fed chunk by chunk while an upload streams to storage: the first bytes
decide the binary formats by their magic numbers; text must be valid UTF-8 all the way
through. The claim (declared type, or extension) is then judged against that (see
`verified_type`), and the client's file name is made safe to store, show and send back.
An image's preview is a small copy of it (`image_preview`).
"""

import codecs
import io
import re
import unicodedata
from collections.abc import Collection
from pathlib import PurePosixPath
from typing import Final
from urllib.parse import quote

from PIL import Image, ImageOps

from chatkit_backend.errors import UnsupportedMediaType

# The binary types this server can recognise, by their first bytes.
PNG: Final = "image/png"
JPEG: Final = "image/jpeg"
GIF: Final = "image/gif"
WEBP: Final = "image/webp"
PDF: Final = "application/pdf"
TEXT: Final = "text"  # valid UTF-8 without binary control characters
UNKNOWN: Final = "unknown"  # binary, but none of the above

_HEAD_BYTES = 16
# Control characters other than tab, line feed, form feed, carriage return and escape
# (all of which real text files contain) mean binary. A regex scans at C speed.
_BINARY_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def magic_type(head: bytes) -> str | None:
    """The binary type the first bytes announce, if any."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    # PDF readers accept the header a little way in; writers put it first.
    if head.startswith(b"%PDF-"):
        return PDF
    return None


class ContentSniffer:
    """Watches the bytes of one file go by and says what they are."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._text = True
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if len(self._head) < _HEAD_BYTES:
            self._head += chunk[: _HEAD_BYTES - len(self._head)]
            if magic_type(bytes(self._head)) is not None:
                self._text = False  # decided: no need to decode the rest
        if self._text:
            self._text = self._looks_like_text(chunk, final=False)

    def _looks_like_text(self, chunk: bytes, final: bool) -> bool:
        if _BINARY_CONTROL.search(chunk):
            return False
        try:
            self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError:
            return False
        return True

    def result(self) -> str:
        """One of the binary types above, `TEXT` or `UNKNOWN`; call after the last chunk."""
        found = magic_type(bytes(self._head))
        if found is not None:
            return found
        if self._text and self._looks_like_text(b"", final=True):
            return TEXT
        return UNKNOWN


PLAIN_TEXT: Final = "text/plain"
GENERIC: Final = frozenset({"", "application/octet-stream", "binary/octet-stream"})
IMAGES: Final = frozenset({PNG, JPEG, GIF, WEBP})
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
    ".png": PNG,
    ".jpg": JPEG,
    ".jpeg": JPEG,
    ".gif": GIF,
    ".webp": WEBP,
    ".pdf": PDF,
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
    if content in (*IMAGES, PDF):
        if claim in GENERIC or claim == content or (is_image(claim) and is_image(content)):
            return accepted_claim(content, allowed)
        raise UnsupportedMediaType(f"The file's content is {content}, not {claim}")
    if content == TEXT:
        if claim in GENERIC:
            return accepted_claim(PLAIN_TEXT, allowed)
        if is_text_like(claim):
            return accepted_claim(claim, allowed)
        raise UnsupportedMediaType(f"The file's content is text, not {claim}")
    if claim in GENERIC:
        raise UnsupportedMediaType("The file's type could not be recognised")
    if is_text_like(claim):
        raise UnsupportedMediaType(f"The file is not UTF-8 text, so not {claim}")
    if is_image(claim) or claim == PDF:
        raise UnsupportedMediaType(f"The file's content is not {claim}")
    return accepted_claim(claim, allowed)


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


# Previews: what `<img>` shows in the thread, where the original (up to
# MAX_ATTACHMENT_BYTES) would be a lot to load for a thumbnail.
PREVIEW_TYPE: Final = WEBP
PREVIEW_EXTENSION: Final = ".webp"
PREVIEW_MAX_SIDE: Final = 512
# Decoding costs memory by pixels, not bytes: a small file can declare a huge canvas
# (a decompression bomb). Larger images get no preview; 40 megapixels (about 160 MB
# decoded) is more than phone cameras take, and JPEGs are measured after decoding at a
# reduced scale. Pillow's own MAX_IMAGE_PIXELS guard stays in force as well.
PREVIEW_MAX_PIXELS: Final = 40_000_000
_PREVIEW_FORMATS: Final = ("PNG", "JPEG", "GIF", "WEBP")
NO_PREVIEW: Final = "This image cannot be read, so it has no preview"


def image_preview(data: bytes) -> bytes:
    """A WebP of the image at most `PREVIEW_MAX_SIDE` pixels on its long side, upright
    (EXIF orientation applied), without its metadata; the first frame of an animation.

    Raises `UnsupportedMediaType` for anything that cannot be decoded or is too large to.
    CPU-bound: run it in a worker thread.
    """
    try:
        with Image.open(io.BytesIO(data), formats=_PREVIEW_FORMATS) as opened:
            # JPEG decodes straight to a smaller scale; twice the target keeps it sharp.
            opened.draft(None, (PREVIEW_MAX_SIDE * 2, PREVIEW_MAX_SIDE * 2))
            if opened.width * opened.height > PREVIEW_MAX_PIXELS:
                raise UnsupportedMediaType("This image is too large to make a preview of")
            image: Image.Image = ImageOps.exif_transpose(opened)
            if image.mode not in ("RGB", "RGBA"):
                # Palette (GIF) and grey images, with their transparency if they have any.
                transparent = "A" in image.getbands() or "transparency" in image.info
                image = image.convert("RGBA" if transparent else "RGB")
            image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.LANCZOS)
            preview = io.BytesIO()
            image.save(preview, "WEBP", quality=80)
    except UnsupportedMediaType:
        raise
    except Exception:
        # Broken or truncated files make Pillow raise many kinds of error (OSError,
        # SyntaxError, ValueError, EOFError, its DecompressionBombError): all are the
        # file's fault, none the server's.
        raise UnsupportedMediaType(NO_PREVIEW) from None
    return preview.getvalue()
