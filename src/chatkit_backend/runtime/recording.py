"""What the model said, recorded as it arrives: text a failed run must not lose.

When a model call fails, the Agents SDK raises at once and drops the stream events it
had received but not yet handed on (`RunResultStreaming.stream_events`). A stream cut
right after a burst of tokens therefore lost the whole partial answer, although the
model had said it. Recording at the model layer sees every event before that queue.
"""

from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from agents import Model, ModelResponse, ModelRetryAdvice, ModelRetryAdviceRequest
from agents.items import TResponseStreamEvent
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
        kind = event.type
        if kind == "response.output_text.delta" and self.messages:
            assert isinstance(event, ResponseTextDeltaEvent)
            # Chat Completions models give every message one fake id: the newest wins.
            message = self.messages[-1]
            if message.raw_id != event.item_id:
                message = next(
                    (m for m in reversed(self.messages) if m.raw_id == event.item_id), message
                )
            while len(message.parts) <= event.content_index:
                message.parts.append("")
            message.parts[event.content_index] += event.delta
        elif kind == "response.output_item.added":
            assert isinstance(event, ResponseOutputItemAddedEvent)
            if event.item.type == "message":
                self.messages.append(SaidMessage(event.item.id))


# The recorder of the run in progress: runs share one `RecordingModel` (and one
# `RunConfig`, whose construction costs milliseconds), each task sees its own recorder.
current_recorder: ContextVar[TextRecorder | None] = ContextVar("current_recorder", default=None)


class RecordingModel(Model):
    """Another model, with every streamed event shown to the run's `TextRecorder` first."""

    def __init__(self, model: Model) -> None:
        self.model = model

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return await self.model.get_response(*args, **kwargs)

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        stream = self.model.stream_response(*args, **kwargs)
        recorder = current_recorder.get()
        try:
            if recorder is None:
                async for event in stream:
                    yield event
            else:
                async for event in stream:
                    recorder.see(event)
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
