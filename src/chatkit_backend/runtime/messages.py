"""Fix-ups between the SDK's agent stream and what the thread stores."""

from collections.abc import Callable, Sequence
from datetime import datetime

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

from chatkit_backend.agents.recording import SaidMessage


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
