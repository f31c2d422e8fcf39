"""The fake OpenAI server against the real `openai` client and Agents SDK, no app involved."""

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    Model,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
)
from agents.items import ToolCallItem
from agents.models.fake_id import FAKE_RESPONSES_ID
from openai import AsyncOpenAI

from tests.support.fake_openai import (
    FakeOpenAI,
    Recorded,
    Reply,
    ToolCall,
    handoff,
    tokens,
)

MODEL = "fake-model-2025"
ANSWER = "Employee 7 is Ada Lovelace, in engineering."
NO_TRACING = RunConfig(tracing_disabled=True)

MakeModel = Callable[[AsyncOpenAI], Model]
APIS: dict[str, MakeModel] = {
    "chat_completions": lambda client: OpenAIChatCompletionsModel(MODEL, openai_client=client),
    "responses": lambda client: OpenAIResponsesModel(MODEL, openai_client=client),
}


@asynccontextmanager
async def openai_client(fake: FakeOpenAI, **options: Any) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake.base_url, api_key="k", **options) as client:
        yield client


def answer_after_tool(request: Recorded) -> Reply:
    """Text quoting the tool output the request carries, if it carries one."""
    if request.tool_output is None:
        return Reply(text="I never got the tool's output.")
    return Reply(text=f"{ANSWER} ({request.tool_output.output})")


@pytest.mark.parametrize("api", APIS)
async def test_agent_calls_a_tool_then_answers(fake: FakeOpenAI, api: str) -> None:
    looked_up: list[int] = []

    @function_tool
    def get_employee(employee_id: int) -> str:
        """Look up an employee by id."""
        looked_up.append(employee_id)
        return json.dumps({"id": employee_id, "name": "Ada Lovelace"})

    fake.once(Reply(tool_calls=[ToolCall("get_employee", {"employee_id": 7})]))
    fake.respond_with(answer_after_tool)
    async with openai_client(fake) as client:
        agent = Agent(
            name="HR", instructions="Help.", tools=[get_employee], model=APIS[api](client)
        )
        result = Runner.run_streamed(agent, "Who is employee 7?", run_config=NO_TRACING)
        events = [event async for event in result.stream_events()]

    tool_output = json.dumps({"id": 7, "name": "Ada Lovelace"})
    assert looked_up == [7]
    assert result.final_output == f"{ANSWER} ({tool_output})"
    [call] = [item for item in result.new_items if isinstance(item, ToolCallItem)]
    call_id = call.raw_item.call_id  # type: ignore[union-attr]

    first, second = fake.requests
    path = "/v1/chat/completions" if api == "chat_completions" else "/v1/responses"
    assert first.path == second.path == path
    assert first.body["stream"] is True
    assert first.tool_names == second.tool_names == ["get_employee"]
    assert first.tool_output is None
    assert second.tool_output is not None
    assert (second.tool_output.call_id, second.tool_output.output) == (call_id, tool_output)
    assert ("user", "Who is employee 7?") in second.messages()

    # The ids in the SDK's stream: Chat Completions has no item ids, so the SDK puts its
    # placeholder on every item, the assistant message included; Responses keeps ours.
    ids = [
        event.item.raw_item.id
        for event in events
        if event.type == "run_item_stream_event"
        and event.name in ("tool_called", "message_output_created")
    ]
    if api == "chat_completions":
        assert ids == [FAKE_RESPONSES_ID, FAKE_RESPONSES_ID] == ["__fake_id__"] * 2
    else:
        assert [i.split("_")[0] for i in ids] == ["fc", "msg"]


@pytest.mark.parametrize("api", APIS)
async def test_triage_hands_off_to_billing(fake: FakeOpenAI, api: str) -> None:
    fake.once(Reply(tool_calls=[handoff("Billing")]), Reply(text="Your invoice is paid."))
    async with openai_client(fake) as client:
        model = APIS[api](client)
        billing = Agent(name="Billing", instructions="You handle invoices.", model=model)
        triage = Agent(name="Triage", instructions="Route.", handoffs=[billing], model=model)
        result = Runner.run_streamed(triage, "Is my invoice paid?", run_config=NO_TRACING)
        agents = [
            e.new_agent.name
            async for e in result.stream_events()
            if e.type == "agent_updated_stream_event"
        ]

    assert result.last_agent is billing
    assert result.final_output == "Your invoice is paid."
    assert agents == ["Triage", "Billing"]
    to_triage, to_billing = fake.requests
    assert to_triage.tool_names == ["transfer_to_billing"]
    assert to_billing.tool_output is not None
    assert json.loads(to_billing.tool_output.output) == {"assistant": "Billing"}
    instructions = to_billing.body.get("instructions") or to_billing.messages()[0][1]
    assert instructions == "You handle invoices."


async def test_agents_sdk_gets_chat_usage_only_when_asked(fake: FakeOpenAI) -> None:
    fake.always(Reply(text=ANSWER))
    async with openai_client(fake) as client:
        model = APIS["chat_completions"](client)
        for include_usage in (None, True):
            settings = ModelSettings(include_usage=include_usage)
            agent = Agent(name="HR", model=model, model_settings=settings)
            result = Runner.run_streamed(agent, "Hi", run_config=NO_TRACING)
            async for _ in result.stream_events():
                pass
            assert result.final_output == ANSWER
            assert (result.context_wrapper.usage.output_tokens > 0) is bool(include_usage)
    assert "stream_options" not in fake.requests[0].body
    assert fake.requests[1].body["stream_options"] == {"include_usage": True}


async def test_chat_completions_streams_text_with_usage(fake: FakeOpenAI) -> None:
    fake.always(Reply(text=ANSWER))
    async with openai_client(fake) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Who is employee 7?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        plain = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Again?"}]
        )

    *with_choices, last = chunks
    assert [c.choices[0].delta.content for c in with_choices][1:-1] == tokens(ANSWER)
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert plain.choices[0].message.content == ANSWER
    assert plain.choices[0].finish_reason == "stop"
    assert [r.messages() for r in fake.requests] == [
        [("user", "Who is employee 7?")],
        [("user", "Again?")],
    ]


async def test_chat_completions_tool_call_without_streaming(fake: FakeOpenAI) -> None:
    fake.always(Reply(tool_calls=[ToolCall("get_employee", {"employee_id": 7}, call_id="c1")]))
    async with openai_client(fake) as client:
        plain = await client.chat.completions.create(model=MODEL, messages=[])
    [choice] = plain.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert (call.id, call.function.name) == ("c1", "get_employee")  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"employee_id": 7}  # type: ignore[union-attr]


async def test_chat_completions_rate_limit(fake: FakeOpenAI) -> None:
    fake.always(Reply(status=429))
    async with openai_client(fake, max_retries=1) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=MODEL, messages=[], stream=True)
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert len(fake.requests) == 2, "one retry"


async def test_chat_completions_cut_and_stall(fake: FakeOpenAI) -> None:
    fake.once(Reply(text=ANSWER, cut_after=2), Reply(stall=10.0))
    async with openai_client(fake, max_retries=0, timeout=0.3) as client:
        stream = await client.chat.completions.create(model=MODEL, messages=[], stream=True)
        got: list[str] = []
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
        assert "".join(got) == "".join(tokens(ANSWER)[:2])
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=MODEL, messages=[], stream=True)


async def test_one_script_serves_both_apis(fake: FakeOpenAI) -> None:
    fake.once(Reply(text="first"), Reply(text="second"))
    fake.respond_with(lambda request: Reply(text=f"then {request.path}"))
    async with openai_client(fake) as client:
        chat = await client.chat.completions.create(model=MODEL, messages=[])
        response = await client.responses.create(model=MODEL, input="Hi")
        last = await client.chat.completions.create(model=MODEL, messages=[])
    assert chat.choices[0].message.content == "first"
    assert response.output_text == "second"
    assert last.choices[0].message.content == "then /v1/chat/completions"
