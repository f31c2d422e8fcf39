"""The ChatKit server: the SDK's protocol handling on our store and agents."""

from collections.abc import AsyncIterator

import anyio
from agents.items import TResponseInputItem
from chatkit.agents import AgentContext, ThreadItemConverter
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.types import (
    AssistantMessageItem,
    Attachment,
    ChatKitReq,
    FeedbackKind,
    ThreadItem,
    ThreadMetadata,
    ThreadsDeleteReq,
    ThreadStreamEvent,
    UserMessageItem,
    UserMessageTextContent,
    is_streaming_req,
)
from openai.types.responses import ResponseInputContentParam, ResponseInputTextParam

from chatkit_backend.attachments.model_input import AttachmentInput, label, with_parts
from chatkit_backend.attachments.service import AttachmentService
from chatkit_backend.context import RequestContext
from chatkit_backend.runtime.answerer import Answerer
from chatkit_backend.settings import Settings
from chatkit_backend.store.sql_store import SQLStore


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


class ChatServer(ChatKitServer[RequestContext]):
    """Answers with an Agents SDK agent and keeps everything in the SQL store."""

    def __init__(
        self,
        store: SQLStore,
        answerer: Answerer,
        settings: Settings,
        attachments: AttachmentService | None = None,
        attachment_input: AttachmentInput | None = None,
    ) -> None:
        super().__init__(store, attachments)
        self.sql_store = store
        self.answerer = answerer
        self.settings = settings
        self.attachments = attachments
        self.converter = HistoryConverter(attachment_input)

    async def handle(
        self, request: ChatKitReq, context: RequestContext
    ) -> StreamingResult | NonStreamingResult:
        """`process()` for a request already parsed and checked by the API layer."""
        # The SDK's own `process()` re-parses and rebuilds its TypeAdapter on every call.
        if is_streaming_req(request):
            return StreamingResult(self._process_streaming(request, context))
        if isinstance(request, ThreadsDeleteReq) and self.attachments is not None:
            return NonStreamingResult(await self._delete_thread(request, context))
        return NonStreamingResult(await self._process_non_streaming(request, context))

    async def _delete_thread(self, request: ThreadsDeleteReq, context: RequestContext) -> bytes:
        """Delete the thread, then its attachments' bytes (the store removes the records)."""
        assert self.attachments is not None
        thread_id, owner = request.params.thread_id, context.owner
        attachment_ids = await self.sql_store.attachments.ids_in_thread(thread_id, owner)
        result = await self._process_non_streaming(request, context)
        await self.attachments.delete_files(attachment_ids)
        return result

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        agent_context = AgentContext[RequestContext](
            thread=thread, store=self.store, request_context=context
        )
        history = await self.converter.to_agent_input(await self.recent_items(thread, context))
        options = input_user_message.inference_options if input_user_message else None
        async for event in self.answerer.answer(
            agent_context,
            history,
            options,
            lambda: self.store.generate_item_id("message", thread, context),
        ):
            yield event
        if thread.title is None and self.settings.titles and input_user_message is not None:
            # The SDK notices the change, saves the thread and sends `thread.updated`.
            thread.title = await self.answerer.title(_text_of(input_user_message))

    async def recent_items(
        self, thread: ThreadMetadata, context: RequestContext
    ) -> list[ThreadItem]:
        """The newest items of the thread, oldest first: the model's view of history."""
        page = await self.store.load_thread_items(
            thread.id, None, self.settings.history_items, "desc", context
        )
        return list(reversed(page.data))

    async def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: RequestContext
    ) -> None:
        # The client went away: the task is being cancelled, so the writes that keep the
        # partial answer must be shielded or they would be cancelled too.
        with anyio.CancelScope(shield=True):
            await super().handle_stream_cancelled(thread, pending_items, context)

    async def add_feedback(
        self, thread_id: str, item_ids: list[str], feedback: FeedbackKind, context: RequestContext
    ) -> None:
        await self.sql_store.save_feedback(thread_id, item_ids, feedback, context)


def _text_of(message: UserMessageItem) -> str:
    return " ".join(
        part.text for part in message.content if isinstance(part, UserMessageTextContent)
    )
