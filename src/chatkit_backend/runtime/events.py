"""From an Agents SDK run to ChatKit thread events, as they happen.

Our version of chatkit's `stream_agent_response`, on the same public types and with the
same results, shaped for one streamed turn:
- assistant messages get our own ids when they start (Chat Completions models call
  every message `__fake_id__`, so the second answer would overwrite the first);
- a text delta costs one small event and a string append: no copies of the message,
  no comparisons of the thread, no merge task per event;
- events the agent's context emits (workflow tasks from tool hooks, widgets) reach the
  turn the moment they are emitted, not when the model next says something.

`RunEvents.raw` takes the run's stream events; `TurnContext` feeds `RunEvents.context`.
Both hand finished ChatKit events to the `emit` callback.
"""

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from agents import RunResultStreaming, StreamEvent
from chatkit.agents import AgentContext, ResponseStreamConverter
from chatkit.server import stream_widget
from chatkit.types import (
    Annotation,
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageContentPartAnnotationAdded,
    AssistantMessageContentPartDone,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ClientToolCallItem,
    DurationSummary,
    GeneratedImage,
    GeneratedImageItem,
    GeneratedImageUpdated,
    ThoughtTask,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
    Workflow,
    WorkflowItem,
    WorkflowTaskAdded,
    WorkflowTaskUpdated,
)
from chatkit.widgets import WidgetRoot
from openai.types.responses import ResponseFunctionToolCall
from openai.types.responses.response_output_text import Annotation as ResponsesAnnotation
from pydantic import PrivateAttr, TypeAdapter

from chatkit_backend.context import RequestContext
from chatkit_backend.ops.metrics import count_tokens
from chatkit_backend.providers.streaming import bare_model
from chatkit_backend.runtime.recording import SaidMessage
from chatkit_backend.store.turns import Usage

Emit = Callable[[ThreadStreamEvent], None]
_ANNOTATION: TypeAdapter[ResponsesAnnotation] = TypeAdapter(ResponsesAnnotation)
_CONVERTER = ResponseStreamConverter()


def _now() -> datetime:
    return datetime.now()  # noqa: DTZ005 - naive, as the SDK stamps its items


class TurnContext(AgentContext[RequestContext]):
    """The SDK's agent context, its events handed straight to the turn.

    The SDK's version queues them for a merge task; here `stream` is the turn's hand-off.
    """

    _on_event: Callable[[ThreadStreamEvent], None] | None = PrivateAttr(default=None)

    def listen(self, on_event: Callable[[ThreadStreamEvent], None]) -> None:
        self._on_event = on_event

    async def stream(self, event: ThreadStreamEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    async def stream_widget(self, widget: WidgetRoot | Any, copy_text: str | None = None) -> None:
        async for event in stream_widget(
            self.thread,
            widget,
            copy_text,
            lambda item_type: self.store.generate_item_id(
                item_type, self.thread, self.request_context
            ),
        ):
            await self.stream(event)


class OpenMessage:
    """An assistant message being streamed: its parts' text, kept as chunks."""

    __slots__ = ("item", "parts")

    def __init__(self, item: AssistantMessageItem) -> None:
        self.item = item
        self.parts: list[list[str]] = [[part.text] for part in item.content]

    def part(self, index: int) -> list[str]:
        while len(self.parts) <= index:
            self.parts.append([])
        return self.parts[index]

    def text(self) -> str:
        return "".join("".join(chunks) for chunks in self.parts)

    def current(self) -> AssistantMessageItem:
        """The message with the text so far (a copy; the original stays as it started)."""
        content = [
            AssistantMessageContent(
                text="".join(chunks),
                annotations=(
                    self.item.content[index].annotations if index < len(self.item.content) else []
                ),
            )
            for index, chunks in enumerate(self.parts)
        ]
        return self.item.model_copy(update={"content": content})


class RunEvents:
    """Turns one run's events into ChatKit events, and remembers what is unfinished."""

    def __init__(
        self,
        context: TurnContext,
        emit: Emit,
        new_message_id: Callable[[], str],
        converter: ResponseStreamConverter = _CONVERTER,
    ) -> None:
        self.context = context
        self.emit = emit
        self.new_message_id = new_message_id
        self.converter = converter
        self.thread_id = context.thread.id
        # Raw (model) message id -> ours. Chat Completions reuses one raw id: newest wins.
        self.ids: dict[str, str] = {}
        self.open: dict[str, OpenMessage] = {}
        # Our ids of the messages started so far, in order (the model's n-th message).
        self.started: list[str] = []
        # What this run added to the thread, to take back if a guardrail trips.
        self.produced: set[str] = set()
        self.annotations: dict[tuple[str, int], int] = {}
        self.thought: tuple[str, int, ThoughtTask] | None = None
        self.tool_call: tuple[str | None, str | None] = (None, None)
        self._spent: tuple[RunResultStreaming, str] | None = None
        context.listen(self.from_context)

    def spending(self, result: RunResultStreaming, model: str) -> None:
        """The run whose tokens `usage` reports."""
        self._spent = (result, model)

    def usage(self) -> Usage | None:
        """What the run spent, however it ended (counted in the metrics once here)."""
        if self._spent is None:
            return None
        result, model = self._spent
        self._spent = None
        usage = result.context_wrapper.usage
        if usage.requests == 0 and usage.total_tokens == 0:
            return None
        count_tokens(model, usage.input_tokens, usage.output_tokens)
        return Usage(model, usage.requests, usage.input_tokens, usage.output_tokens)

    # Events the agent's context emits (tool hooks, widgets, workflow helpers)

    def from_context(self, event: ThreadStreamEvent) -> None:
        context = self.context
        if isinstance(event, ThreadItemAddedEvent | ThreadItemDoneEvent):
            item = event.item
            # A visible item after a workflow closes it.
            workflow = context.workflow_item
            if (
                workflow is not None
                and workflow.id != item.id
                and item.type not in ("client_tool_call", "hidden_context_item")
            ):
                self._end_workflow(workflow)
            if isinstance(event, ThreadItemAddedEvent) and isinstance(item, WorkflowItem):
                context.workflow_item = item
            self.produced.add(item.id)
        self.emit(event)

    # The run's own events

    async def raw(self, stream_event: StreamEvent) -> None:
        if stream_event.type == "run_item_stream_event":
            item = stream_event.item
            if item.type == "tool_call_item":
                self.tool_call = _function_call_metadata(item.raw_item)
                if self.tool_call[0] is not None and self.tool_call[1] is not None:
                    self.produced.add(self.tool_call[1])
            return
        if stream_event.type != "raw_response_event":
            return
        event = stream_event.data
        match event.type:
            case "response.output_text.delta":
                our_id = self.ids.get(event.item_id)
                if our_id is None:
                    return
                message = self.open.get(our_id)
                if message is not None:
                    message.part(event.content_index).append(event.delta)
                self.emit(_text_delta(our_id, event.content_index, event.delta))
            case "response.output_item.added":
                await self._item_added(event.item)
            case "response.output_item.done":
                await self._item_done(event.item)
            case "response.content_part.added":
                if event.part.type == "reasoning_text":
                    return
                our_id = self.ids.get(event.item_id)
                if our_id is None:
                    return
                content = await self._content(event.part)
                if (message := self.open.get(our_id)) is not None:
                    message.part(event.content_index)[:] = [content.text]
                self.emit(
                    ThreadItemUpdatedEvent(
                        item_id=our_id,
                        update=AssistantMessageContentPartAdded(
                            content_index=event.content_index, content=content
                        ),
                    )
                )
            case "response.output_text.done":
                our_id = self.ids.get(event.item_id)
                if our_id is None:
                    return
                if (message := self.open.get(our_id)) is not None:
                    message.part(event.content_index)[:] = [event.text]
                self.emit(
                    ThreadItemUpdatedEvent(
                        item_id=our_id,
                        update=AssistantMessageContentPartDone(
                            content_index=event.content_index,
                            content=AssistantMessageContent(text=event.text, annotations=[]),
                        ),
                    )
                )
            case "response.output_text.annotation.added":
                await self._annotation(event.item_id, event.content_index, event.annotation)
            case "response.reasoning_summary_text.delta":
                self._thought_delta(event.item_id, event.summary_index, event.delta)
            case "response.reasoning_summary_text.done":
                self._thought_done(event.item_id, event.summary_index, event.text)
            case "response.image_generation_call.partial_image":
                await self._partial_image(event)
            case _:
                pass

    def finish(self) -> None:
        """After a complete run: the client tool call it asked for, if any."""
        context = self.context
        if context.client_tool_call is not None:
            call_id, item_id = self.tool_call
            store, thread = context.store, context.thread
            self.emit(
                ThreadItemDoneEvent(
                    item=ClientToolCallItem(
                        id=item_id
                        or store.generate_item_id("tool_call", thread, context.request_context),
                        thread_id=self.thread_id,
                        name=context.client_tool_call.name,
                        arguments=context.client_tool_call.arguments,
                        created_at=_now(),
                        call_id=call_id
                        or store.generate_item_id("tool_call", thread, context.request_context),
                    )
                )
            )

    def withdraw(self) -> None:
        """After a guardrail tripped: take back everything this run showed."""
        for item_id in self.produced:
            self.emit(ThreadItemRemovedEvent(item_id=item_id))
        self.open.clear()

    def salvage(self, said: Sequence[SaidMessage]) -> None:
        """After a failed run: finish every message the model started, in full.

        `said` is what the model streamed (see `recording.py`); it can hold more text than
        the stream showed, and whole messages the stream never started.
        """
        for index, message in enumerate(said):
            if not message.text.strip():
                continue
            if index < len(self.started):
                # None: finished and saved already, or removed on purpose.
                started = self.open.get(self.started[index])
                if started is not None and len(message.text) > len(started.text()):
                    started.parts = [[text] for text in message.parts]
                continue
            item = AssistantMessageItem(
                id=self.new_message_id(),
                thread_id=self.thread_id,
                created_at=_now(),
                content=[AssistantMessageContent(text=text) for text in message.parts],
            )
            self.open[item.id] = OpenMessage(item)
            self.emit(ThreadItemAddedEvent(item=item))
        for item in self.unfinished():
            self.emit(ThreadItemDoneEvent(item=item))
        self.open.clear()

    def unfinished(self) -> list[AssistantMessageItem]:
        """Open messages with any text, as far as they got."""
        return [message.current() for message in self.open.values() if message.text().strip()]

    # Helpers

    async def _item_added(self, item: Any) -> None:
        context = self.context
        if item.type == "reasoning" and context.workflow_item is None:
            context.workflow_item = WorkflowItem(
                id=context.generate_id("workflow"),
                created_at=_now(),
                workflow=Workflow(type="reasoning", tasks=[]),
                thread_id=self.thread_id,
            )
            self.produced.add(context.workflow_item.id)
            self.emit(ThreadItemAddedEvent(item=context.workflow_item))
        elif item.type == "message":
            if context.workflow_item is not None:
                self._end_workflow(context.workflow_item)
            our_id = self.new_message_id()
            self.ids[item.id] = our_id
            message = AssistantMessageItem(
                id=our_id,
                thread_id=self.thread_id,
                content=[await self._content(part) for part in item.content],
                created_at=_now(),
            )
            self.open[our_id] = OpenMessage(message)
            self.started.append(our_id)
            self.produced.add(our_id)
            self.emit(ThreadItemAddedEvent(item=message))
        elif item.type == "image_generation_call":
            context.generated_image_item = GeneratedImageItem(
                id=context.generate_id("message"),
                thread_id=self.thread_id,
                created_at=_now(),
                image=None,
            )
            self.produced.add(context.generated_image_item.id)
            self.emit(ThreadItemAddedEvent(item=context.generated_image_item))

    async def _item_done(self, item: Any) -> None:
        context = self.context
        if item.type == "message":
            our_id = self.ids.pop(item.id, None) or self.new_message_id()
            started = self.open.pop(our_id, None)
            self.produced.add(our_id)
            self.emit(
                ThreadItemDoneEvent(
                    item=AssistantMessageItem(
                        id=our_id,
                        thread_id=self.thread_id,
                        content=[await self._content(part) for part in item.content],
                        created_at=started.item.created_at if started else _now(),
                    )
                )
            )
        elif item.type == "image_generation_call" and item.result:
            image_item = context.generated_image_item
            if image_item is None:
                return
            url = await self.converter.base64_image_to_url(
                image_id=item.id, base64_image=item.result
            )
            image_item.image = GeneratedImage(id=item.id, url=url)
            self.emit(ThreadItemDoneEvent(item=image_item))
            context.generated_image_item = None

    async def _content(self, part: Any) -> AssistantMessageContent:
        if part.type == "output_text":
            annotations = [await self._convert(a) for a in part.annotations]
            return AssistantMessageContent(
                text=part.text, annotations=[a for a in annotations if a is not None]
            )
        return AssistantMessageContent(text=part.refusal, annotations=[])

    async def _convert(self, raw: object) -> Annotation | None:
        annotation = _ANNOTATION.validate_python(raw)
        match annotation.type:
            case "file_citation":
                return await self.converter.file_citation_to_annotation(annotation)
            case "url_citation":
                return await self.converter.url_citation_to_annotation(annotation)
            case "container_file_citation":
                return await self.converter.container_file_citation_to_annotation(annotation)
            case _:
                return None

    async def _annotation(self, raw_id: str, content_index: int, raw: object) -> None:
        our_id = self.ids.get(raw_id)
        annotation = await self._convert(raw)
        if our_id is None or annotation is None:
            return
        # Counted per part: an annotation we could not convert leaves no gap.
        index = self.annotations.get((our_id, content_index), 0)
        self.annotations[(our_id, content_index)] = index + 1
        self.emit(
            ThreadItemUpdatedEvent(
                item_id=our_id,
                update=AssistantMessageContentPartAnnotationAdded(
                    content_index=content_index, annotation_index=index, annotation=annotation
                ),
            )
        )

    def _thought_delta(self, raw_id: str, summary_index: int, delta: str) -> None:
        workflow = self.context.workflow_item
        if workflow is None:
            return
        tasks = workflow.workflow.tasks
        if workflow.workflow.type == "reasoning" and not tasks:
            # The first thought streams in a new task, so it shows early.
            task = ThoughtTask(content=delta)
            self.thought = (raw_id, summary_index, task)
            tasks.append(task)
            self.emit(
                ThreadItemUpdatedEvent(
                    item_id=workflow.id, update=WorkflowTaskAdded(task=task, task_index=0)
                )
            )
        elif self.thought is not None and self.thought[:2] == (raw_id, summary_index):
            task = self.thought[2]
            if task in tasks:
                task.content += delta
                self.emit(
                    ThreadItemUpdatedEvent(
                        item_id=workflow.id,
                        update=WorkflowTaskUpdated(task=task, task_index=tasks.index(task)),
                    )
                )

    def _thought_done(self, raw_id: str, summary_index: int, text: str) -> None:
        workflow = self.context.workflow_item
        if workflow is None:
            return
        tasks = workflow.workflow.tasks
        update: WorkflowTaskAdded | WorkflowTaskUpdated
        thought = self.thought
        if thought is not None and thought[:2] == (raw_id, summary_index) and thought[2] in tasks:
            task = thought[2]
            task.content = text
            self.thought = None
            update = WorkflowTaskUpdated(task=task, task_index=tasks.index(task))
        else:
            task = ThoughtTask(content=text)
            tasks.append(task)
            update = WorkflowTaskAdded(task=task, task_index=tasks.index(task))
        self.emit(ThreadItemUpdatedEvent(item_id=workflow.id, update=update))

    async def _partial_image(self, event: Any) -> None:
        image_item = self.context.generated_image_item
        if image_item is None:
            return
        url = await self.converter.base64_image_to_url(
            image_id=event.item_id,
            base64_image=event.partial_image_b64,
            partial_image_index=event.partial_image_index,
        )
        image_item.image = GeneratedImage(id=event.item_id, url=url)
        progress = self.converter.partial_image_index_to_progress(event.partial_image_index)
        self.emit(
            ThreadItemUpdatedEvent(
                item_id=image_item.id,
                update=GeneratedImageUpdated(image=image_item.image, progress=progress),
            )
        )

    def _end_workflow(self, item: WorkflowItem) -> None:
        # Closed by default; an agent keeps one open with `end_workflow(expanded=True)`.
        if item is self.context.workflow_item or item == self.context.workflow_item:
            self.context.workflow_item = None
        if item.workflow.summary is None:
            duration = int((_now() - item.created_at).total_seconds())
            item.workflow.summary = DurationSummary(duration=duration)
        item.workflow.expanded = False
        self.emit(ThreadItemDoneEvent(item=item))


def _text_delta(item_id: str, content_index: int, delta: str) -> ThreadItemUpdatedEvent:
    """What `model_construct` would build, for a quarter of its cost: the fields are the
    model's, already typed, and this is one per token of every answer."""
    update = bare_model(
        AssistantMessageContentPartTextDelta,
        {"type": _DELTA_TYPE, "content_index": content_index, "delta": delta},
        {"content_index", "delta"},
        None,
    )
    event: ThreadItemUpdatedEvent = bare_model(
        ThreadItemUpdatedEvent,
        {"type": "thread.item.updated", "item_id": item_id, "update": update},
        {"item_id", "update"},
        None,
    )
    return event


_DELTA_TYPE = "assistant_message.content_part.text_delta"


def _function_call_metadata(raw_item: object) -> tuple[str | None, str | None]:
    """The call id and item id of a function call the model made."""
    if isinstance(raw_item, dict):
        if raw_item.get("type") != "function_call":
            return None, None
        call_id, item_id = raw_item.get("call_id"), raw_item.get("id")
        return (
            call_id if isinstance(call_id, str) else None,
            item_id if isinstance(item_id, str) else None,
        )
    if isinstance(raw_item, ResponseFunctionToolCall):
        return raw_item.call_id, raw_item.id
    return None, None


def continued_workflow(history: list[ThreadItem]) -> WorkflowItem | None:
    """A workflow the previous turn left open (last, or just before a client tool call)."""
    last = history[-1] if history else None
    before = history[-2] if len(history) > 1 else None
    if isinstance(last, WorkflowItem):
        return last
    if isinstance(last, ClientToolCallItem) and isinstance(before, WorkflowItem):
        return before
    return None
