"""The model's view of a thread: its newest items as Agents SDK input."""

from collections.abc import Sequence
from contextvars import ContextVar

from agents.items import TResponseInputItem
from chatkit.agents import ThreadItemConverter
from chatkit.types import AssistantMessageItem, Attachment, ThreadItem, UserMessageItem
from openai.types.responses import ResponseInputContentParam, ResponseInputTextParam

from chatkit_backend.attachments.model_input import (
    SEND_ALL,
    AttachmentInput,
    Resend,
    label,
    with_parts,
)

# The budget of the history being converted: one converter serves every turn at once,
# and the SDK converts item by item, so the choice made for the whole history is passed
# to each message through the task's context rather than the converter.
_resend: ContextVar[Resend] = ContextVar("resend", default=SEND_ALL)


class HistoryConverter(ThreadItemConverter):
    """The SDK's converter, with earlier answers in a shape both model APIs accept.

    The SDK sends them as `output_text` parts, which the Agents SDK's Chat Completions
    converter refuses ("Unknown content"): every second message failed on Gemini and
    local servers. Plain text works for the Responses API and Chat Completions alike.

    Attachments reach the model after the user's text, each introduced by a label
    naming the file (see `attachments.model_input`); those of earlier messages past the
    budget by the label alone (`AttachmentInput.resend`).
    """

    def __init__(self, attachments: AttachmentInput | None = None) -> None:
        self.attachments = attachments

    async def attachment_to_message_content(
        self, attachment: Attachment
    ) -> ResponseInputContentParam:
        if self.attachments is None:
            text = f"{label(attachment.name, attachment.mime_type)}: not readable here."
            return ResponseInputTextParam(type="input_text", text=text)
        return (await self.attachments.parts(attachment))[-1]

    async def to_agent_input(
        self, thread_items: Sequence[ThreadItem] | ThreadItem
    ) -> list[TResponseInputItem]:
        items = list(thread_items) if isinstance(thread_items, Sequence) else [thread_items]
        if self.attachments is None:
            return await super().to_agent_input(items)
        messages = [item for item in items if isinstance(item, UserMessageItem)]
        # The newest user message is the one being answered (a new one, or a retry).
        answered = messages[-1].attachments if messages else []
        earlier = [
            attachment
            for message in reversed(messages[:-1])
            for attachment in reversed(message.attachments)
        ]
        token = _resend.set(await self.attachments.resend(answered, earlier))
        try:
            return await super().to_agent_input(items)
        finally:
            _resend.reset(token)

    async def user_message_to_input(
        self, item: UserMessageItem, is_last_message: bool = True
    ) -> TResponseInputItem | list[TResponseInputItem] | None:
        if self.attachments is None or not item.attachments:
            return await super().user_message_to_input(item, is_last_message)
        # The SDK would give each attachment one part; ours also get their label.
        bare = item.model_copy(update={"attachments": []})
        converted = await super().user_message_to_input(bare, is_last_message)
        resend = _resend.get()
        parts = [
            part for each in item.attachments for part in await self.attachments.parts(each, resend)
        ]
        return with_parts(converted, parts)

    async def assistant_message_to_input(
        self, item: AssistantMessageItem
    ) -> TResponseInputItem | list[TResponseInputItem] | None:
        text = "".join(part.text for part in item.content)
        return {"type": "message", "role": "assistant", "content": text}
