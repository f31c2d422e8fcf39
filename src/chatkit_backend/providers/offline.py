"""A deterministic model that needs no network, for development, demos and tests.

It streams like a real Responses model: text word by word, and function calls for
tools and handoffs, chosen by `offline_script.plan`.
"""

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
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
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
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

from chatkit_backend.attachments.model_input import last_user_text
from chatkit_backend.providers.offline_script import Call, Say, plan, tokens_of

MODEL_NAME = "offline"


def _plan(
    instructions: str | None,
    input: str | list[TResponseInputItem],
    model_settings: ModelSettings,
    tools: list[Tool],
    handoffs: list[Handoff[Any, Any]],
) -> Call | Say:
    choice = model_settings.tool_choice if isinstance(model_settings.tool_choice, str) else None
    return plan(
        instructions,
        input,
        [tool.name for tool in tools],
        {handoff.tool_name: handoff.agent_name for handoff in handoffs},
        choice,
    )


def _usage(input: str | list[TResponseInputItem], output: str) -> ResponseUsage:
    input_tokens = len(tokens_of(last_user_text(input)))
    output_tokens = len(tokens_of(output))
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


def _function_call(item_id: str, call: Call, done: bool) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=item_id,
        type="function_call",
        call_id=f"call_{item_id[3:]}",
        name=call.name,
        arguments=call.arguments if done else "",
        status="completed" if done else "in_progress",
    )


class OfflineModel(Model):
    """Streams an honest local answer word by word, calling tools and handoffs when asked."""

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
        step = _plan(system_instructions, input, model_settings, tools, handoffs)
        item_id = f"fc_{secrets.token_hex(16)}"
        match step:
            case Say(text=text):
                output: Any = _message(f"msg_{secrets.token_hex(16)}", text)
            case Call() as call:
                text, output = call.arguments, _function_call(item_id, call, done=True)
        usage = _usage(input, text)
        return ModelResponse(
            output=[output],
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
        step = _plan(system_instructions, input, model_settings, tools, handoffs)
        response_id = f"resp_{secrets.token_hex(16)}"
        numbers = iter(range(1_000_000))
        yield ResponseCreatedEvent(
            type="response.created",
            response=_response(response_id, [], None),
            sequence_number=next(numbers),
        )
        match step:
            case Say(text=text):
                output: Any = None
                for event in self._text_events(text, numbers):
                    if isinstance(event, ResponseOutputItemDoneEvent):
                        output = event.item
                    elif isinstance(event, ResponseTextDeltaEvent) and self.token_delay:
                        await asyncio.sleep(self.token_delay)
                    yield event
            case Call() as call:
                text = call.arguments
                output = _function_call(f"fc_{secrets.token_hex(16)}", call, done=True)
                for event in _call_events(output, numbers):
                    yield event
        yield ResponseCompletedEvent(
            type="response.completed",
            response=_response(response_id, [output], _usage(input, text)),
            sequence_number=next(numbers),
        )

    def _text_events(self, text: str, numbers: Iterator[int]) -> Iterator[TResponseStreamEvent]:
        item_id = f"msg_{secrets.token_hex(16)}"
        where: dict[str, Any] = {"item_id": item_id, "output_index": 0, "content_index": 0}
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added",
            item=_message(item_id, None),
            output_index=0,
            sequence_number=next(numbers),
        )
        empty = ResponseOutputText(type="output_text", text="", annotations=[])
        yield ResponseContentPartAddedEvent(
            type="response.content_part.added", part=empty, sequence_number=next(numbers), **where
        )
        for token in tokens_of(text):
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta",
                delta=token,
                logprobs=[],
                sequence_number=next(numbers),
                **where,
            )
        yield ResponseTextDoneEvent(
            type="response.output_text.done",
            text=text,
            logprobs=[],
            sequence_number=next(numbers),
            **where,
        )
        part = ResponseOutputText(type="output_text", text=text, annotations=[])
        yield ResponseContentPartDoneEvent(
            type="response.content_part.done", part=part, sequence_number=next(numbers), **where
        )
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done",
            item=_message(item_id, text),
            output_index=0,
            sequence_number=next(numbers),
        )


def _call_events(
    call: ResponseFunctionToolCall, numbers: Iterator[int]
) -> Iterator[TResponseStreamEvent]:
    assert call.id is not None
    yield ResponseOutputItemAddedEvent(
        type="response.output_item.added",
        item=call.model_copy(update={"arguments": "", "status": "in_progress"}),
        output_index=0,
        sequence_number=next(numbers),
    )
    yield ResponseFunctionCallArgumentsDeltaEvent(
        type="response.function_call_arguments.delta",
        item_id=call.id,
        output_index=0,
        delta=call.arguments,
        sequence_number=next(numbers),
    )
    yield ResponseFunctionCallArgumentsDoneEvent(
        type="response.function_call_arguments.done",
        item_id=call.id,
        name=call.name,
        output_index=0,
        arguments=call.arguments,
        sequence_number=next(numbers),
    )
    yield ResponseOutputItemDoneEvent(
        type="response.output_item.done", item=call, output_index=0, sequence_number=next(numbers)
    )
