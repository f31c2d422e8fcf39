"""A deterministic model that needs no network, for development, demos and tests."""

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

from agents import Handoff, Model, ModelResponse, ModelSettings, ModelTracing, Tool, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.items import TResponseInputItem, TResponseStreamEvent
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

MODEL_NAME = "offline"
_TOKEN = re.compile(r"\s*\S+")


def last_user_text(input: str | list[TResponseInputItem]) -> str:
    """The text of the newest user message in a Responses-style input."""
    if isinstance(input, str):
        return input
    for item in reversed(input):
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content: Any = item.get("content")
        if isinstance(content, str):
            return content
        parts = [p.get("text", "") for p in content or [] if p.get("type") == "input_text"]
        return "\n".join(part for part in parts if part)
    return ""


def offline_answer(user_text: str) -> str:
    """The reply for a message: says plainly what it is, and echoes what it was given."""
    said = " ".join(user_text.split())
    if len(said) > 200:
        said = said[:200] + "…"
    echo = f' You said: "{said}".' if said else ""
    return (
        "This is the offline model of chatkit-backend: no language model is configured, "
        f"so this answer is generated locally.{echo} Set LLM_PROVIDER and an API key "
        "to get real answers."
    )


def tokens_of(text: str) -> list[str]:
    """Split text into word-sized deltas that join back to exactly `text`."""
    return _TOKEN.findall(text)


def _usage(input_text: str, output_text: str) -> ResponseUsage:
    input_tokens, output_tokens = len(tokens_of(input_text)), len(tokens_of(output_text))
    return ResponseUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )


def _response(response_id: str, output: list[Any], usage: ResponseUsage | None) -> Response:
    return Response(
        id=response_id,
        created_at=0,
        model=MODEL_NAME,
        object="response",
        output=output,
        tool_choice="auto",
        tools=[],
        parallel_tool_calls=False,
        status="completed" if usage else "in_progress",
        usage=usage,
    )


class OfflineModel(Model):
    """Streams a fixed, honest answer word by word, like a real model would."""

    def __init__(self, token_delay: float = 0.0) -> None:
        self.token_delay = token_delay

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        user_text = last_user_text(input)
        text = offline_answer(user_text)
        usage = _usage(user_text, text)
        return ModelResponse(
            output=[_message(f"msg_{secrets.token_hex(16)}", text)],
            usage=Usage(
                requests=1,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            ),
            response_id=None,
        )

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        user_text = last_user_text(input)
        text = offline_answer(user_text)
        async for event in self._stream_text(user_text, text):
            yield event

    async def _stream_text(self, user_text: str, text: str) -> AsyncIterator[TResponseStreamEvent]:
        response_id = f"resp_{secrets.token_hex(16)}"
        item_id = f"msg_{secrets.token_hex(16)}"
        seq = iter(range(1_000_000))
        yield ResponseCreatedEvent(
            type="response.created",
            response=_response(response_id, [], None),
            sequence_number=next(seq),
        )
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added",
            item=_message(item_id, None),
            output_index=0,
            sequence_number=next(seq),
        )
        empty = ResponseOutputText(type="output_text", text="", annotations=[])
        yield ResponseContentPartAddedEvent(
            type="response.content_part.added",
            item_id=item_id,
            output_index=0,
            content_index=0,
            part=empty,
            sequence_number=next(seq),
        )
        for token in tokens_of(text):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta",
                item_id=item_id,
                output_index=0,
                content_index=0,
                delta=token,
                logprobs=[],
                sequence_number=next(seq),
            )
        yield ResponseTextDoneEvent(
            type="response.output_text.done",
            item_id=item_id,
            output_index=0,
            content_index=0,
            text=text,
            logprobs=[],
            sequence_number=next(seq),
        )
        done_part = ResponseOutputText(type="output_text", text=text, annotations=[])
        yield ResponseContentPartDoneEvent(
            type="response.content_part.done",
            item_id=item_id,
            output_index=0,
            content_index=0,
            part=done_part,
            sequence_number=next(seq),
        )
        message = _message(item_id, text)
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done",
            item=message,
            output_index=0,
            sequence_number=next(seq),
        )
        yield ResponseCompletedEvent(
            type="response.completed",
            response=_response(response_id, [message], _usage(user_text, text)),
            sequence_number=next(seq),
        )


def _message(item_id: str, text: str | None) -> ResponseOutputMessage:
    content = (
        [] if text is None else [ResponseOutputText(type="output_text", text=text, annotations=[])]
    )
    return ResponseOutputMessage(
        id=item_id,
        type="message",
        role="assistant",
        status="in_progress" if text is None else "completed",
        content=content,
    )
