"""What the model is given for each attachment of a message.

Each attachment is introduced by a label line naming the file and its type, then:
images as image input, text-like files as text (up to a cap, said when cut), PDFs as
file input where the provider takes it, anything else as the label and a short note.
Both model APIs accept these parts: the Agents SDK turns `input_image` and `input_file`
(with inline `file_data`) into Chat Completions `image_url` and `file` parts.
"""

import base64
import re
from typing import Any

from agents.items import TResponseInputItem
from chatkit.types import Attachment
from openai.types.responses import (
    ResponseInputContentParam,
    ResponseInputFileParam,
    ResponseInputImageParam,
    ResponseInputTextParam,
)

from chatkit_backend.attachments import content as media_types
from chatkit_backend.attachments import content as sniffing
from chatkit_backend.attachments.storage import AttachmentStorage, BlobMissing

# About 12k tokens: enough for a page of code or a small CSV, not a whole book.
MAX_INLINE_TEXT_CHARS = 50_000
# UTF-8 takes at most 4 bytes a character.
_MAX_INLINE_TEXT_BYTES = MAX_INLINE_TEXT_CHARS * 4


def _text(text: str) -> ResponseInputTextParam:
    return ResponseInputTextParam(type="input_text", text=text)


def _data_url(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


class AttachmentInput:
    """Reads attachments from storage and turns them into model input parts."""

    def __init__(self, storage: AttachmentStorage, max_bytes: int, files_accepted: bool) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        # Whether the provider reads `input_file` (PDF) parts; local servers do not.
        self.files_accepted = files_accepted

    async def parts(self, attachment: Attachment) -> list[ResponseInputContentParam]:
        """The label, then the content (or a note in the label's line)."""
        name, mime_type = attachment.name, attachment.mime_type
        heading = label(name, mime_type)
        try:
            if media_types.is_image(mime_type):
                data = await self.storage.read(attachment.id, self.max_bytes)
                image = ResponseInputImageParam(
                    type="input_image", detail="auto", image_url=_data_url(mime_type, data)
                )
                return [_text(heading), image]
            if media_types.is_text_like(mime_type):
                return [_text(await self._text_file(attachment.id, heading))]
            if mime_type == sniffing.PDF and self.files_accepted:
                data = await self.storage.read(attachment.id, self.max_bytes)
                document = ResponseInputFileParam(
                    type="input_file", filename=name, file_data=_data_url(mime_type, data)
                )
                return [_text(heading), document]
        except BlobMissing:
            return [_text(f"{heading}: the file is no longer available.")]
        return [_text(f"{heading}: its content cannot be shown to this model.")]

    async def _text_file(self, key: str, heading: str) -> str:
        size = await self.storage.size(key)
        data = await self.storage.read(key, _MAX_INLINE_TEXT_BYTES)
        # A cut can split a character: drop the broken tail, keep the rest.
        text = data.decode("utf-8", errors="ignore")
        cut = len(data) < size or len(text) > MAX_INLINE_TEXT_CHARS
        text = text[:MAX_INLINE_TEXT_CHARS]
        if cut:
            heading += f", only its first {MAX_INLINE_TEXT_CHARS:,} characters shown"
        return f"{heading}:\n{text}"


def with_parts(
    converted: TResponseInputItem | list[TResponseInputItem] | None,
    parts: list[ResponseInputContentParam],
) -> TResponseInputItem | list[TResponseInputItem] | None:
    """Append `parts` to the user's own message: the first item the SDK converted."""
    items: list[Any] = converted if isinstance(converted, list) else [converted]
    message = items[0] if items else None
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return converted
    message["content"] = [*message["content"], *parts]
    return converted


LABEL = re.compile(r'^Attached file "(?P<name>[^"\n]+)" \((?P<type>[^()\s]+)\)')


def label(name: str, mime_type: str) -> str:
    # Stored names never contain quotes or newlines (see names.safe_name).
    return f'Attached file "{name}" ({mime_type})'


def _last_user_content(input: str | list[TResponseInputItem]) -> str | list[Any]:
    if isinstance(input, str):
        return input
    for item in reversed(input):
        if isinstance(item, dict) and item.get("role") == "user":
            content: Any = item.get("content")
            return content if isinstance(content, str) else list(content or [])
    return ""


def _texts(parts: list[Any]) -> list[str]:
    return [p.get("text", "") for p in parts if p.get("type") == "input_text"]


def last_user_text(input: str | list[TResponseInputItem]) -> str:
    """The text of the newest user message in a Responses-style input, without the
    attachments that came with it (labelled parts after the first)."""
    content = _last_user_content(input)
    if isinstance(content, str):
        return content
    texts = _texts(content)
    typed = texts[:1] + [text for text in texts[1:] if not LABEL.match(text)]
    return "\n".join(text for text in typed if text)


def last_user_attachments(input: str | list[TResponseInputItem]) -> list[str]:
    """`name (type)` of each attachment labelled in the newest user message."""
    content = _last_user_content(input)
    if isinstance(content, str):
        return []
    found = (LABEL.match(text) for text in _texts(content)[1:])
    return [f"{m['name']} ({m['type']})" for m in found if m]
