"""What the model is given for each attachment of a message.

Each attachment is introduced by a label line naming the file and its type, then:
images as image input, text-like files as text (up to a cap, said when cut), PDFs as
file input where the provider takes it, anything else as the label and a short note.
Both model APIs accept these parts: the Agents SDK turns `input_image` and `input_file`
(with inline `file_data`) into Chat Completions `image_url` and `file` parts.

Every turn sends the whole history window again, so the files of earlier messages are
sent whole only within a budget (`Resend`): the newest few, up to a number of bytes.
The rest are named by their label with their size and a note that they were shared
earlier, so a thread with a few large images does not pay for them on every message.
"""

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    if size < 1000**2:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1000**2:.1f} MB"


@dataclass(frozen=True, slots=True)
class Resend:
    """The files of a history that are sent by label only, with their sizes.

    Files not named here (the budget's, or ones sent as a note anyway) go as usual.
    """

    labelled: Mapping[str, int] = field(default_factory=dict)


SEND_ALL = Resend()


class AttachmentInput:
    """Reads attachments from storage and turns them into model input parts."""

    def __init__(
        self,
        storage: AttachmentStorage,
        max_bytes: int,
        files_accepted: bool,
        *,
        whole_count: int = 3,
        whole_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        # Whether the provider reads `input_file` (PDF) parts; local servers do not.
        self.files_accepted = files_accepted
        # The budget for files of earlier messages (MODEL_ATTACHMENTS_WHOLE and
        # MODEL_ATTACHMENT_BYTES).
        self.whole_count = whole_count
        self.whole_bytes = whole_bytes

    async def resend(self, answered: Sequence[Attachment], earlier: Sequence[Attachment]) -> Resend:
        """Which files go by label: `answered` are the files of the message being
        answered, `earlier` those of the messages before it, newest first.

        The files being answered are always sent whole (the user has just sent them, and
        the question is about them); they use the budget first. Earlier ones follow,
        newest first, until one would be over the count or the bytes; it and all older
        ones go by label, so the model never sees an old file but not a newer one.
        """
        used_count, used_bytes = 0, 0
        for attachment in answered:
            size = await self._content_size(attachment)
            if size is not None:
                used_count, used_bytes = used_count + 1, used_bytes + self._cost(attachment, size)
        labelled: dict[str, int] = {}
        for attachment in earlier:
            size = await self._content_size(attachment)
            if size is None:
                continue  # sent as a note whatever the budget
            cost = self._cost(attachment, size)
            fits = used_count < self.whole_count and used_bytes + cost <= self.whole_bytes
            if fits and not labelled:
                used_count, used_bytes = used_count + 1, used_bytes + cost
            else:
                labelled[attachment.id] = size
        return Resend(labelled)

    def _cost(self, attachment: Attachment, size: int) -> int:
        """The bytes of the file that a request carries (text is cut, see `_text_file`)."""
        if media_types.is_text_like(attachment.mime_type):
            return min(size, _MAX_INLINE_TEXT_BYTES)
        return min(size, self.max_bytes)

    async def _content_size(self, attachment: Attachment) -> int | None:
        """The size of a file whose content the model is sent; None if only a note is."""
        mime_type = attachment.mime_type
        readable = (
            media_types.is_image(mime_type)
            or media_types.is_text_like(mime_type)
            or (mime_type == sniffing.PDF and self.files_accepted)
        )
        if not readable:
            return None
        try:
            return await self.storage.size(attachment.id)
        except BlobMissing:
            return None

    async def parts(
        self, attachment: Attachment, resend: Resend = SEND_ALL
    ) -> list[ResponseInputContentParam]:
        """The label, then the content (or a note in the label's line)."""
        name, mime_type = attachment.name, attachment.mime_type
        heading = label(name, mime_type)
        size = resend.labelled.get(attachment.id)
        if size is not None:
            return [_text(f"{heading}: {_size(size)}, shared earlier; not sent again.")]
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
