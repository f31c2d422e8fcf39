"""The Agents SDK's OpenAI models with a lean streamed read (see `streaming`).

Only the streamed fetch changes: the SDK still builds every request (tools, handoffs,
model settings, prompt caching...), and the openai client still sends it, with its
auth, retries, timeouts and status errors (`RateLimitError`, `AuthenticationError`...).
The model's output is then read by our `LeanStream` instead of openai's `AsyncStream`.
"""

from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal, cast, overload

from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseInputItem
from agents.model_settings import ModelSettings
from agents.models.interface import ModelTracing
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel, _ResponseStreamWithRequestId
from agents.tool import Tool
from agents.tracing import GenerationSpanData, Span
from openai import NOT_GIVEN, AsyncOpenAI, AsyncStream
from openai._base_client import make_request_options
from openai._compat import model_dump
from openai._constants import RAW_RESPONSE_HEADER
from openai._response import AsyncAPIResponse, AsyncResponseContextManager
from openai._utils import is_given
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_prompt_param import ResponsePromptParam
from pydantic import BaseModel

from chatkit_backend.providers.streaming import ChatChunkStream, ResponseEventStream

__all__ = ["LeanChatCompletionsModel", "LeanResponsesModel"]


class LeanResponsesModel(OpenAIResponsesModel):
    """`OpenAIResponsesModel` whose streamed events come from `ResponseEventStream`."""

    @overload
    async def _fetch_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        previous_response_id: str | None,
        conversation_id: str | None,
        stream: Literal[True],
        prompt: ResponsePromptParam | None = None,
    ) -> AsyncIterator[ResponseStreamEvent]: ...

    @overload
    async def _fetch_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        previous_response_id: str | None,
        conversation_id: str | None,
        stream: Literal[False],
        prompt: ResponsePromptParam | None = None,
    ) -> Response: ...

    async def _fetch_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        stream: Literal[True] | Literal[False] = False,
        prompt: ResponsePromptParam | None = None,
    ) -> Response | AsyncIterator[ResponseStreamEvent]:
        client = self._get_client()
        if not stream or not isinstance(client, AsyncOpenAI):
            return await super()._fetch_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                stream=stream,
                prompt=prompt,
            )
        create_kwargs = self._build_response_create_kwargs(
            system_instructions=system_instructions,
            input=input,
            model_settings=model_settings,
            tools=tools,
            output_schema=output_schema,
            handoffs=handoffs,
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            stream=True,
            prompt=prompt,
        )
        # As the SDK: keep the raw response open while the events are read, for its
        # request id; status errors raise here, from the openai client.
        api_response_cm = _post_streamed(client, create_kwargs)
        api_response = await api_response_cm.__aenter__()
        try:
            events = ResponseEventStream(
                cast_to=cast(Any, ResponseStreamEvent),
                response=api_response.http_response,
                client=client,
            )
        except BaseException as exc:
            await api_response_cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        # The SDK's own wrapper: the request id on terminal responses, the usage
        # bookkeeping, and closing the stream and the response exactly once.
        return _ResponseStreamWithRequestId(
            events,
            request_id=api_response.request_id,
            cleanup=lambda: api_response_cm.__aexit__(None, None, None),
        )


def _post_streamed(
    client: AsyncOpenAI, create_kwargs: dict[str, Any]
) -> AsyncResponseContextManager[AsyncAPIResponse[Response]]:
    """`client.responses.with_streaming_response.create(**create_kwargs)`, without the
    openai client's typed transform of the body.

    That transform walks every key of the request against the TypedDicts of the
    Responses API, resolving type hints as it goes: with a thread's history as input it
    cost milliseconds per item, the largest single share of a streamed turn. For these
    params it changes nothing but leaving out unset values (no field has an alias or a
    format), which `_plain` does; the request is the same bytes (tests compare them).
    """
    kwargs = dict(create_kwargs)
    headers = {**(kwargs.pop("extra_headers", None) or {}), RAW_RESPONSE_HEADER: "stream"}
    options = make_request_options(
        extra_headers=headers,
        extra_query=kwargs.pop("extra_query", None),
        extra_body=kwargs.pop("extra_body", None),
        timeout=kwargs.pop("timeout", NOT_GIVEN),
        security={"bearer_auth": True},
    )
    request = client.post(
        "/responses",
        body=_plain(kwargs),
        options=options,
        cast_to=Response,
        stream=True,
        stream_cls=AsyncStream[ResponseStreamEvent],
    )
    return AsyncResponseContextManager(cast(Any, request))


def _plain(value: Any) -> Any:
    """JSON-ready data: unset values dropped, iterables as lists, models as dicts."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if is_given(item)}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, BaseModel):
        # As openai's transform dumps a model.
        exclude = getattr(value, "__api_exclude__", None)
        return model_dump(value, exclude_unset=True, mode="json", exclude=exclude)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Iterable):
        return [_plain(item) for item in value]
    return value


class LeanChatCompletionsModel(OpenAIChatCompletionsModel):
    """`OpenAIChatCompletionsModel` whose streamed chunks come from `ChatChunkStream`."""

    @overload
    async def _fetch_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        span: Span[GenerationSpanData],
        tracing: ModelTracing,
        stream: Literal[True],
        prompt: ResponsePromptParam | None = None,
    ) -> tuple[Response, AsyncStream[ChatCompletionChunk]]: ...

    @overload
    async def _fetch_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        span: Span[GenerationSpanData],
        tracing: ModelTracing,
        stream: Literal[False],
        prompt: ResponsePromptParam | None = None,
    ) -> ChatCompletion: ...

    async def _fetch_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        span: Span[GenerationSpanData],
        tracing: ModelTracing,
        stream: bool = False,
        prompt: ResponsePromptParam | None = None,
    ) -> ChatCompletion | tuple[Response, AsyncStream[ChatCompletionChunk]]:
        # The SDK builds the request inline and sends it with `chat.completions.create`,
        # which returns an `AsyncStream` that has not read a byte yet (status errors have
        # raised by then): we read its HTTP response ourselves instead.
        fetched = await super()._fetch_response(
            system_instructions,
            input,
            model_settings,
            tools,
            output_schema,
            handoffs,
            span,
            tracing,
            stream=cast(Any, stream),
            prompt=prompt,
        )
        if not isinstance(fetched, tuple):
            return cast(ChatCompletion, fetched)
        response, chunks = fetched
        if type(chunks) is not AsyncStream:
            return response, chunks  # a custom client's stream: leave it alone
        lean = ChatChunkStream(
            cast_to=ChatCompletionChunk, response=chunks.response, client=chunks._client
        )
        return response, lean
