"""The assistant messages of one answer: what the model said (recorded as it streamed),
and the fix-ups between the SDK's agent stream and what the thread stores."""

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents import Model, ModelResponse, ModelRetryAdvice, ModelRetryAdviceRequest
from agents.items import TResponseStreamEvent
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageContentPartDone,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
)
from openai.types.responses import ResponseOutputItemAddedEvent, ResponseTextDeltaEvent


@dataclass
class SaidMessage:
    """One assistant message as the model streamed it: the text of each content part."""

    raw_id: str
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class TextRecorder:
    """The assistant messages of one run, in the order the model started them."""

    def __init__(self) -> None:
        self.messages: list[SaidMessage] = []

    def see(self, event: TResponseStreamEvent) -> None:
        if isinstance(event, ResponseOutputItemAddedEvent) and event.item.type == "message":
            self.messages.append(SaidMessage(event.item.id))
        elif isinstance(event, ResponseTextDeltaEvent) and self.messages:
            # Chat Completions models give every message one fake id: the newest wins.
            message = next(
                (m for m in reversed(self.messages) if m.raw_id == event.item_id),
                self.messages[-1],
            )
            while len(message.parts) <= event.content_index:
                message.parts.append("")
            message.parts[event.content_index] += event.delta


class RecordingModel(Model):
    """Another model, with every streamed event shown to a `TextRecorder` first."""

    def __init__(self, model: Model, recorder: TextRecorder) -> None:
        self.model = model
        self.recorder = recorder

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return await self.model.get_response(*args, **kwargs)

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        stream = self.model.stream_response(*args, **kwargs)
        try:
            async for event in stream:
                self.recorder.see(event)
                yield event
        finally:
            # Closing this generator must close the model's, or its HTTP stream stays open.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def get_retry_advice(self, request: ModelRetryAdviceRequest) -> ModelRetryAdvice | None:
        return self.model.get_retry_advice(request)

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.model._cleanup_on_run_end(owner)

    # `close()` stays the base no-op: the wrapped model is shared and closed by its provider.


class AnswerTracker:
    """Gives each assistant message its own id and remembers unfinished ones.

    Chat Completions models give every message the id `__fake_id__`, so without new
    ids a second answer would overwrite the first. Unfinished messages are what a
    failed run leaves behind; they are kept rather than lost.
    """

    def __init__(self, new_message_id: Callable[[], str]) -> None:
        self._new_id = new_message_id
        self._ids: dict[str, str] = {}
        self._open: dict[str, AssistantMessageItem] = {}
        # Our ids of the messages started so far, in order: the model's n-th message.
        self._started: list[str] = []

    def rewrite(self, event: ThreadStreamEvent) -> ThreadStreamEvent:
        """Return `event` with our message ids, noting what it adds to open messages."""
        match event:
            case ThreadItemAddedEvent(item=AssistantMessageItem() as item):
                new_id = self._new_id()
                self._ids[item.id] = new_id
                item = item.model_copy(update={"id": new_id}, deep=True)
                self._open[new_id] = item.model_copy(deep=True)
                self._started.append(new_id)
                return ThreadItemAddedEvent(item=item)
            case ThreadItemUpdatedEvent(item_id=raw_id) if raw_id in self._ids:
                new_id = self._ids[raw_id]
                self._apply(new_id, event)
                # In place: the event is the SDK's fresh object for this one update, and a
                # copy per text delta was a measurable share of a streamed answer's CPU.
                event.item_id = new_id
                return event
            case ThreadItemRemovedEvent(item_id=raw_id) if raw_id in self._ids:
                new_id = self._ids.pop(raw_id)
                self._open.pop(new_id, None)
                return ThreadItemRemovedEvent(item_id=new_id)
            case ThreadItemDoneEvent(item=AssistantMessageItem() as item):
                new_id = self._ids.pop(item.id, "") or self._new_id()
                self._open.pop(new_id, None)
                return ThreadItemDoneEvent(item=item.model_copy(update={"id": new_id}))
            case _:
                return event

    def unfinished(self) -> list[AssistantMessageItem]:
        """Open messages with any text, for saving when a run fails midway."""
        return [
            item for item in self._open.values() if any(part.text.strip() for part in item.content)
        ]

    def salvage(self, said: Sequence[SaidMessage], thread_id: str) -> list[ThreadStreamEvent]:
        """After a failed run: events that keep every unfinished message, in full.

        `said` is what the model streamed (see `recording.py`); it can hold more text than
        the stream showed, and whole messages the stream never started.
        """
        events: list[ThreadStreamEvent] = []
        for index, message in enumerate(said):
            if not message.text.strip():
                continue
            if index < len(self._started):
                item = self._open.get(self._started[index])
                shown = "".join(part.text for part in item.content) if item else ""
                # None: finished and saved already, or removed on purpose.
                if item is not None and len(message.text) > len(shown):
                    item.content = [AssistantMessageContent(text=t) for t in message.parts]
                continue
            item = AssistantMessageItem(
                id=self._new_id(),
                thread_id=thread_id,
                created_at=datetime.now(),  # noqa: DTZ005 - naive, as the SDK stamps its items
                content=[AssistantMessageContent(text=text) for text in message.parts],
            )
            self._open[item.id] = item
            events.append(ThreadItemAddedEvent(item=item.model_copy(deep=True)))
        events += [ThreadItemDoneEvent(item=item) for item in self.unfinished()]
        return events

    def _apply(self, item_id: str, event: ThreadItemUpdatedEvent) -> None:
        item = self._open.get(item_id)
        if item is None:
            return
        update = event.update
        if isinstance(
            update,
            AssistantMessageContentPartAdded
            | AssistantMessageContentPartTextDelta
            | AssistantMessageContentPartDone,
        ):
            while len(item.content) <= update.content_index:
                item.content.append(AssistantMessageContent(text=""))
            match update:
                case AssistantMessageContentPartTextDelta():
                    item.content[update.content_index].text += update.delta
                case AssistantMessageContentPartAdded() | AssistantMessageContentPartDone():
                    item.content[update.content_index] = update.content.model_copy(deep=True)
