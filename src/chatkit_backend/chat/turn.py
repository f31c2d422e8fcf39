"""One streamed ChatKit turn, ours end to end, on the SDK's public types.

`Turns.open` does everything that can refuse the request before a byte is streamed: one
transaction claims the thread (409 while another answer runs, 404 if it is not the
caller's), loads its newest items and stores the user's message. `Turn.run` then
streams the agent's answer as frames and, at the end, stores the answer, its usage and
the thread's new state and frees the thread, in one more transaction, before the last
frames leave: a client that sends again the moment a stream ends finds the thread free.

What reaches the store is what the protocol shows: items when they are done, removed
or replaced; on a cancel, the partial answer and a note for the model (as the SDK's
`handle_stream_cancelled` does); on a failure, the partial answer and an `error` event.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime

import anyio
from chatkit.errors import CustomStreamError, ErrorCode
from chatkit.types import (
    AssistantMessageContentPartTextDelta,
    Attachment,
    ClientToolCallItem,
    ErrorEvent,
    HiddenContextItem,
    Page,
    SDKHiddenContextItem,
    StreamingReq,
    StreamOptions,
    StreamOptionsEvent,
    StructuredInputAnswer,
    StructuredInputItem,
    StructuredInputMultipleChoice,
    StructuredInputSubmission,
    Thread,
    ThreadCreatedEvent,
    ThreadItem,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemReplacedEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsRetryAfterItemReq,
    ThreadStreamEvent,
    ThreadUpdatedEvent,
    UserMessageInput,
    UserMessageItem,
    UserMessageTextContent,
)

from chatkit_backend.chat.leases import new_lease, release
from chatkit_backend.chat.stream import encode
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import NotFound, NotSupported, ThreadBusy
from chatkit_backend.ops.logs import current
from chatkit_backend.ops.metrics import StreamObserver
from chatkit_backend.runtime.answerer import Answerer
from chatkit_backend.runtime.events import RunEvents, TurnContext, continued_workflow
from chatkit_backend.runtime.history import HistoryConverter
from chatkit_backend.settings import Settings
from chatkit_backend.store.engine import is_database_outage
from chatkit_backend.store.sql_store import SQLStore, new_id
from chatkit_backend.store.turns import (
    Finished,
    Lease,
    NewMessage,
    Opened,
    ThreadBusyError,
    ThreadMissingError,
    TurnStore,
)

logger = logging.getLogger(__name__)

Send = Callable[[bytes], None]
CANCELLED_NOTE = "The user cancelled the stream. Stop responding to the prior request."
BUSY_MESSAGE = (
    "This thread is still answering an earlier message; "
    "wait for that answer to finish, or stop it, then send again"
)
NOT_SAVED_MESSAGE = "The answer could not be saved. Try again in a moment."
# Pauses before storing a finished answer again after a database outage (a locked
# SQLite file waits its busy timeout, 5 s, per attempt).
STORE_RETRY_DELAYS = (0.5, 1.0, 2.0)


# Releases started when a stream ended early, kept referenced while they run.
_BACKGROUND: set["asyncio.Task[None]"] = set()
# The stream lets the user stop the answer (the SDK's default).
_OPTIONS = StreamOptionsEvent(stream_options=StreamOptions(allow_cancel=True))


def _now() -> datetime:
    return datetime.now()  # noqa: DTZ005 - naive, as the SDK stamps its items


def _text_of(message: UserMessageItem) -> str:
    return " ".join(
        part.text for part in message.content if isinstance(part, UserMessageTextContent)
    )


def _is_hidden(item: ThreadItem) -> bool:
    return isinstance(item, HiddenContextItem | SDKHiddenContextItem)


class Turns:
    """Opens streamed turns; every refusal comes before the stream starts."""

    def __init__(
        self,
        store: SQLStore,
        turns: TurnStore,
        answerer: Answerer,
        converter: HistoryConverter,
        settings: Settings,
    ) -> None:
        self.store = store
        self.turns = turns
        self.answerer = answerer
        self.converter = converter
        self.settings = settings

    async def open(self, request: StreamingReq, context: RequestContext) -> "Turn":
        lease = new_lease()
        # Events before `stream_options` (the new thread, the user's message), and the
        # first ones after it (an answered structured input), as the SDK orders them.
        before: list[ThreadStreamEvent] = []
        leading: list[ThreadStreamEvent] = []
        finished = Finished()
        match request:
            case ThreadsCreateReq():
                thread = ThreadMetadata(id=new_id("thread"), created_at=_now())
                message = _new_message(request.params.input, thread.id)
                opened = await self.turns.create(
                    thread, context, lease, message, request.params.input.attachments
                )
                response = Thread(**thread.model_dump(), items=Page())
                before.append(ThreadCreatedEvent(thread=response))
            case ThreadsAddUserMessageReq():
                added = request.params
                opened = await self._open(
                    added.thread_id,
                    context,
                    lease,
                    new_message=_new_message(added.input, added.thread_id),
                    attachment_ids=added.input.attachments,
                )
            case ThreadsRetryAfterItemReq():
                retry = request.params
                opened = await self._open(
                    retry.thread_id, context, lease, truncate_after=retry.item_id
                )
                retried = opened.history[-1] if opened.history else None
                if not isinstance(retried, UserMessageItem) or retried.id != retry.item_id:
                    raise NotFound(f"Item {retry.item_id} not found")
                opened.message = retried
            case ThreadsAddClientToolOutputReq():
                opened = await self._open(request.params.thread_id, context, lease)
                _complete_tool_call(opened, request.params.result, finished)
            case ThreadsAddStructuredInputReq():
                given = request.params
                opened = await self._open(given.thread_id, context, lease)
                item = next((i for i in opened.history if i.id == given.item_id), None)
                if item is None:
                    item = await self.store.load_item(given.thread_id, given.item_id, context)
                if not isinstance(item, StructuredInputItem) or item.status != "pending":
                    raise NotFound(f"Item {given.item_id} is not a pending structured input")
                answered = _answered(item, given.input)
                opened.history = [answered if i.id == item.id else i for i in opened.history]
                leading.append(ThreadItemReplacedEvent(item=answered))
            case _:
                raise NotSupported("This server's agents define no widget actions")
        if (info := current()) is not None:
            info.thread_id = opened.thread.id
        if isinstance(opened.message, UserMessageItem) and not isinstance(
            request, ThreadsRetryAfterItemReq
        ):
            before.append(ThreadItemDoneEvent(item=opened.message))
        opening = [*before, _OPTIONS, *leading]
        return Turn(self, request.type, context, opened, lease, opening, finished)

    async def _open(
        self,
        thread_id: str,
        context: RequestContext,
        lease: Lease,
        *,
        truncate_after: str | None = None,
        new_message: NewMessage | None = None,
        attachment_ids: list[str] | None = None,
    ) -> Opened:
        try:
            return await self.turns.open(
                thread_id,
                context,
                lease,
                self.settings.history_items,
                truncate_after=truncate_after,
                new_message=new_message,
                attachment_ids=attachment_ids or (),
            )
        except ThreadMissingError:
            raise NotFound(f"Thread {thread_id} not found") from None
        except ThreadBusyError:
            raise ThreadBusy(BUSY_MESSAGE) from None


class Turn:
    """One answer being streamed; `run` writes its frames, `closed` ends its accounting."""

    def __init__(
        self,
        turns: Turns,
        chatkit_type: str,
        context: RequestContext,
        opened: Opened,
        lease: Lease,
        opening: list[ThreadStreamEvent],
        finished: Finished,
    ) -> None:
        self.turns = turns
        self.context = context
        self.opened = opened
        self.thread = opened.thread
        self.lease = lease
        self.opening = opening
        self.finished = finished
        # What the answer leaves in the thread, by id, in the order it first appeared.
        self.saved: dict[str, ThreadItem] = {item.id: item for item in finished.items}
        self.observer = StreamObserver(chatkit_type)
        self.error_seen = False
        self._send: Send | None = None
        # A `thread.item.done` frame leaves only once its item is stored, so a client
        # never sees as done what a failure could still lose. Frames queue behind it:
        # mid-answer (a tool's workflow) one small write frees them; at the end, the
        # turn's last transaction does, and the thread is free before they leave.
        self._queue: deque[tuple[bytes, ThreadItem | None]] = deque()
        # Stored already: the user's message went in with the turn's first transaction.
        self._stored: dict[str, ThreadItem] = {}
        if opened.message is not None:
            self._stored[opened.message.id] = opened.message
        self._writer: asyncio.Task[None] | None = None
        self._write_failed = False
        self._ended = False

    async def run(self, send: Send) -> None:
        """Stream the answer through `send`; on a cancel, store what was said and re-raise."""
        self._send = send
        thread = self.thread
        before_answer = thread.model_dump_json()
        title = self._start_title()
        for event in self.opening:
            self._emit(event)
        agent_context = TurnContext(
            thread=thread, store=self.turns.store, request_context=self.context
        )
        agent_context.workflow_item = continued_workflow(self.opened.history)
        events = RunEvents(agent_context, self._emit, lambda: new_id("message"))
        error: ErrorEvent | None = None
        try:
            history = await self.turns.converter.to_agent_input(self.opened.history)
            message = self.opened.message
            options = message.inference_options if isinstance(message, UserMessageItem) else None
            await self.turns.answerer.run(agent_context, history, options, events)
            if agent_context.workflow_item is not None:
                # Left open on purpose: stored, so the next turn continues it.
                self._save(agent_context.workflow_item)
        except CustomStreamError as exc:
            error = ErrorEvent(code="custom", message=exc.message, allow_retry=exc.allow_retry)
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                if title is not None:
                    title.cancel()
                await self._store_cancelled(events)
            raise
        except Exception as exc:
            logger.warning("answer failed: %s", type(exc).__name__)
            error = ErrorEvent(code=ErrorCode.STREAM_ERROR, allow_retry=True)
        if title is not None:
            if error is None:
                thread.title = await title
            else:
                title.cancel()
        changed = thread.model_dump_json() != before_answer
        self.finished.thread = thread if changed else None
        self.finished.usage = events.usage()
        with anyio.CancelScope(shield=True):
            if self._writer is not None:
                await self._writer
            stored = not self._write_failed and await self._store()
        if stored:
            self._flush()
        else:
            # Not stored: nothing more shows as done; the error says to send again.
            self._queue.clear()
            error = ErrorEvent(code="custom", message=NOT_SAVED_MESSAGE, allow_retry=True)
        if error is not None:
            self._emit(error)
        if changed:
            self._emit(ThreadUpdatedEvent(thread=Thread(**thread.model_dump(), items=Page())))

    def closed(self, outcome: str) -> None:
        """The stream ended: completed, error (it raised), cancelled or drained."""
        if outcome == "completed" and self.error_seen:
            outcome = "error"
        if (info := current()) is not None:
            info.outcome = outcome
        self.observer.ended(outcome)
        if not self._ended:
            # The stream ended before the turn could (a client gone before it began):
            # free the thread now rather than when the lease runs out.
            self._ended = True
            releasing = asyncio.create_task(release(self.turns.turns, self.thread.id, self.lease))
            _BACKGROUND.add(releasing)
            releasing.add_done_callback(_BACKGROUND.discard)

    # What happens to each event

    def _emit(self, event: ThreadStreamEvent) -> None:
        if type(event) is ThreadItemUpdatedEvent:
            # The hot path: text deltas and other updates of items in progress.
            if not self.observer.first_delta_seen and (
                type(event.update) is AssistantMessageContentPartTextDelta
            ):
                self.observer.text_delta()
            self._out(encode(event))
            return
        if isinstance(event, ThreadItemDoneEvent):
            self._save(event.item)
            if not _is_hidden(event.item):
                self._out(encode(event), event.item)
            return
        if isinstance(event, ThreadItemRemovedEvent):
            self.saved.pop(event.item_id, None)
            self.finished.deleted.append(event.item_id)
        elif isinstance(event, ThreadItemReplacedEvent):
            self._save(event.item)
        elif isinstance(event, ErrorEvent):
            self.error_seen = True
            self.observer.error_event()
        self._out(encode(event))

    def _out(self, frame: bytes, done: ThreadItem | None = None) -> None:
        """Send `frame`, or queue it behind a done frame whose item is not stored yet."""
        if not self._queue and done is None:
            assert self._send is not None
            self._send(frame)
            return
        self._queue.append((frame, done))
        if done is None and self._writer is None and not self._write_failed:
            # More of the answer follows a done item: store it now, then let both go.
            self._writer = asyncio.create_task(self._write_queued())

    async def _write_queued(self) -> None:
        try:
            while True:
                self._flush_stored()
                waiting = [item for _, item in self._queue if item is not None]
                # Only done frames left: the turn's last transaction stores them.
                if not waiting or all(item is not None for _, item in self._queue):
                    return
                try:
                    await self.turns.turns.save_items(self.thread.id, self.context, waiting)
                except Exception as exc:
                    logger.warning("could not store a finished item: %s", type(exc).__name__)
                    self._write_failed = True
                    return
                self._stored.update((item.id, item) for item in waiting)
        finally:
            self._writer = None

    def _flush_stored(self) -> None:
        """Send the queued frames up to the first done item not yet stored."""
        assert self._send is not None
        queue = self._queue
        while queue and (queue[0][1] is None or self._stored.get(queue[0][1].id) is queue[0][1]):
            self._send(queue.popleft()[0])

    def _flush(self) -> None:
        """After the turn's last transaction: every queued frame."""
        assert self._send is not None
        while self._queue:
            self._send(self._queue.popleft()[0])

    def _save(self, item: ThreadItem) -> None:
        self.saved[item.id] = item

    # The end of the turn

    async def _store(self) -> bool:
        """The turn's last transaction; False (and the thread freed anyway) if it failed."""
        self._ended = True
        # What a write during the answer stored already is not written again.
        self.finished.items = [
            item for item in self.saved.values() if self._stored.get(item.id) is not item
        ]
        for delay in (*STORE_RETRY_DELAYS, None):
            try:
                await self.turns.turns.finish(
                    self.thread.id, self.context, self.lease, self.finished
                )
            except Exception as exc:
                # The answer was streamed already: a locked SQLite file or a database
                # restarting is worth waiting out rather than losing it. The transaction
                # rolled back, so trying again writes nothing twice.
                if delay is not None and is_database_outage(exc):
                    logger.info("storing the answer again: %s", type(exc).__name__)
                    await asyncio.sleep(delay)
                    continue
                logger.warning("could not store the answer: %s", type(exc).__name__)
                await release(self.turns.turns, self.thread.id, self.lease)
                return False
            return True
        raise AssertionError("unreachable")

    async def _store_cancelled(self, events: RunEvents) -> None:
        # As the SDK's `handle_stream_cancelled`: what was said stays, with a note that
        # keeps the model from carrying on with the abandoned request next time.
        for item in events.unfinished():
            self._save(item)
        note = SDKHiddenContextItem(
            id=new_id("sdk_hidden_context"),
            thread_id=self.thread.id,
            created_at=_now(),
            content=CANCELLED_NOTE,
        )
        self._save(note)
        self.finished.usage = events.usage()
        if self._writer is not None:
            await self._writer
        await self._store()

    def _start_title(self) -> "asyncio.Task[str] | None":
        """A new thread's title, made while the answer streams."""
        message = self.opened.message
        if self.thread.title is not None or not self.turns.settings.titles:
            return None
        if not isinstance(message, UserMessageItem):
            return None
        return asyncio.create_task(self.turns.answerer.title(_text_of(message)))


def _new_message(input: UserMessageInput, thread_id: str) -> NewMessage:
    def make(attachments: list[Attachment]) -> ThreadItem:
        return UserMessageItem(
            id=new_id("message"),
            content=input.content,
            thread_id=thread_id,
            attachments=attachments,
            quoted_text=input.quoted_text,
            inference_options=input.inference_options,
            created_at=_now(),
        )

    return make


def _complete_tool_call(opened: Opened, result: object, finished: Finished) -> None:
    """The newest pending client tool call gets its output; older pending ones go."""
    pending = [
        item
        for item in opened.history
        if isinstance(item, ClientToolCallItem) and item.status == "pending"
    ]
    if not pending:
        raise NotFound("The thread has no pending client tool call")
    call = pending[-1]
    call.output = result
    call.status = "completed"
    finished.items.append(call)
    stale = {item.id for item in pending[:-1]}
    finished.deleted.extend(stale)
    opened.history = [item for item in opened.history if item.id not in stale]


def _answered(
    item: StructuredInputItem, submission: StructuredInputSubmission
) -> StructuredInputItem:
    """The item with the user's answers, as the SDK records them."""
    answered = item.model_copy(deep=True)
    for question in answered.inputs:
        answer = submission.answers.get(question.id)
        if submission.status == "skipped" or answer is None or answer.skipped or not answer.values:
            question.answer = StructuredInputAnswer(skipped=True)
            continue
        values = answer.values
        if isinstance(question, StructuredInputMultipleChoice) and not question.multiple:
            values = values[:1]
        question.answer = StructuredInputAnswer(values=values)
    answered.status = submission.status
    return answered
