"""The model's view of a thread: its newest items as Agents SDK input."""

from agents.items import TResponseInputItem
from chatkit.agents import ThreadItemConverter
from chatkit.types import AssistantMessageItem, Attachment, UserMessageItem
from openai.types.responses import ResponseInputContentParam, ResponseInputTextParam

from chatkit_backend.attachments.model_input import AttachmentInput, label, with_parts


class HistoryConverter(ThreadItemConverter):
    """The SDK's converter, with earlier answers in a shape both model APIs accept.

    The SDK sends them as `output_text` parts, which the Agents SDK's Chat Completions
    converter refuses ("Unknown content"): every second message failed on Gemini and
    local servers. Plain text works for the Responses API and Chat Completions alike.

    Attachments reach the model after the user's text, each introduced by a label
    naming the file (see `attachments.model_input`).
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

    async def user_message_to_input(
        self, item: UserMessageItem, is_last_message: bool = True
    ) -> TResponseInputItem | list[TResponseInputItem] | None:
        if self.attachments is None or not item.attachments:
            return await super().user_message_to_input(item, is_last_message)
        # The SDK would give each attachment one part; ours also get their label.
        bare = item.model_copy(update={"attachments": []})
        converted = await super().user_message_to_input(bare, is_last_message)
        parts = [part for each in item.attachments for part in await self.attachments.parts(each)]
        return with_parts(converted, parts)

    async def assistant_message_to_input(
        self, item: AssistantMessageItem
    ) -> TResponseInputItem | list[TResponseInputItem] | None:
        text = "".join(part.text for part in item.content)
        return {"type": "message", "role": "assistant", "content": text}
