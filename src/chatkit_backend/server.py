"""The ChatKit server: the SDK's protocol handling on our store and agents."""

from collections.abc import AsyncIterator

import anyio
from agents import Model, RunConfig, Runner
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.types import (
    ChatKitReq,
    FeedbackKind,
    ThreadItem,
    ThreadItemDoneEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    is_streaming_req,
)

from chatkit_backend.agents.assistant import build_assistant
from chatkit_backend.agents.events import AnswerTracker
from chatkit_backend.agents.failures import describe_failure, log_failure
from chatkit_backend.context import RequestContext
from chatkit_backend.settings import Settings
from chatkit_backend.store.sql_store import SQLStore


class ChatServer(ChatKitServer[RequestContext]):
    """Answers with an Agents SDK agent and keeps everything in the SQL store."""

    def __init__(self, store: SQLStore, model: Model, settings: Settings) -> None:
        super().__init__(store)
        self.sql_store = store
        self.model = model
        self.settings = settings
        self.converter = ThreadItemConverter()
        self.run_config = RunConfig(tracing_disabled=not settings.agents_tracing)

    async def handle(
        self, request: ChatKitReq, context: RequestContext
    ) -> StreamingResult | NonStreamingResult:
        """`process()` for a request already parsed and checked by the API layer."""
        # The SDK's own `process()` re-parses and rebuilds its TypeAdapter on every call.
        if is_streaming_req(request):
            return StreamingResult(self._process_streaming(request, context))
        return NonStreamingResult(await self._process_non_streaming(request, context))

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
        agent = build_assistant(self.model, context)
        tracker = AnswerTracker(lambda: self.store.generate_item_id("message", thread, context))
        try:
            result = Runner.run_streamed(
                agent, history, context=agent_context, run_config=self.run_config
            )
            async for event in stream_agent_response(agent_context, result):
                yield tracker.rewrite(event)
        except Exception as exc:
            log_failure(exc, thread.id)
            # Whatever was said before the failure stays in the thread.
            for item in tracker.unfinished():
                yield ThreadItemDoneEvent(item=item)
            message, allow_retry = describe_failure(exc)
            raise CustomStreamError(message, allow_retry=allow_retry) from None

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
