"""The request shapes of the original design notes keep working."""

from tests.support.chat_client import ChatClient
from tests.support.sse import answer_text, parse_events


async def test_messages_send_creates_then_continues_a_thread(client: ChatClient) -> None:
    created = await client.post(
        {
            "type": "messages.send",
            "params": {"input": {"content": [{"type": "text", "text": "hi"}]}},
        }
    )
    assert created.status_code == 200, created.text
    events = parse_events(created.text)
    assert events[0]["type"] == "thread.created"
    thread_id = events[0]["thread"]["id"]
    assert events[1]["item"]["content"] == [{"type": "input_text", "text": "hi"}]

    continued = await client.post(
        {
            "type": "messages.send",
            "params": {
                "thread_id": thread_id,
                "input": {"content": [{"type": "text", "text": "more"}]},
            },
        }
    )
    assert continued.status_code == 200, continued.text
    assert '"more"' in answer_text(parse_events(continued.text))
    assert len(await client.items(thread_id)) == 4


async def test_threads_get_is_get_by_id(client: ChatClient) -> None:
    thread_id, _ = await client.new_thread()
    response = await client.post({"type": "threads.get", "params": {"thread_id": thread_id}})
    assert response.status_code == 200
    assert response.json()["id"] == thread_id


async def test_input_may_be_plain_text(client: ChatClient) -> None:
    response = await client.post({"type": "threads.create", "params": {"input": "just text"}})
    assert response.status_code == 200, response.text
    assert '"just text"' in answer_text(parse_events(response.text))


async def test_sdk_shapes_are_untouched(client: ChatClient) -> None:
    body = {
        "type": "threads.create",
        "params": {
            "input": {
                "content": [{"type": "input_text", "text": "exact"}],
                "attachments": [],
                "inference_options": {"model": None},
                "quoted_text": "quoted",
            }
        },
        "metadata": {"source": "test"},
    }
    events = parse_events((await client.post(body)).text)
    assert events[1]["item"]["quoted_text"] == "quoted"


async def test_messages_send_to_an_unknown_thread_is_404(client: ChatClient) -> None:
    response = await client.post(
        {"type": "messages.send", "params": {"thread_id": "thr_missing", "input": "hi"}}
    )
    assert response.status_code == 404
