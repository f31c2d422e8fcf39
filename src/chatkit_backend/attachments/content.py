"""What a file's bytes are, whatever its name or declared type says.

Fed chunk by chunk while an upload streams to storage: the first bytes decide the
binary formats by their magic numbers; text must be valid UTF-8 all the way through.
"""

import codecs
import re
from typing import Final

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
