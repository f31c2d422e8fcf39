"""Edges of the protocol on the wire: the last page's cursor, empty messages, a body
without `type`, and `threads.create` without a message. Over HTTP (ASGI), on SQLite and
PostgreSQL."""

from tests.support.chat_client import ChatClient


async def test_only_a_page_with_more_after_it_carries_a_cursor(client: ChatClient) -> None:
    first, _ = await client.new_thread("first")
    second, _ = await client.new_thread("second")

    # The SDK serialises no nulls: a last page's `after` is left out.
    page = await client.call("threads.list", limit=1, order="desc")
    assert (page["has_more"], page["after"]) == (True, second)
    last = await client.call("threads.list", limit=1, order="desc", after=page["after"])
    assert [t["id"] for t in last["data"]] == [first]
    assert last["has_more"] is False and "after" not in last
    whole = await client.call("threads.list", limit=10)
    assert whole["has_more"] is False and "after" not in whole

    ids = [item["id"] for item in await client.items(first)]
    assert len(ids) == 2
    items = await client.call("items.list", thread_id=first, limit=1, order="asc")
    assert (items["has_more"], items["after"]) == (True, ids[0])
    rest = await client.call(
        "items.list", thread_id=first, limit=1, order="asc", after=items["after"]
    )
    assert [i["id"] for i in rest["data"]] == [ids[1]]
    assert rest["has_more"] is False and "after" not in rest
    thread = await client.call("threads.get_by_id", thread_id=first)
    assert thread["items"]["has_more"] is False and "after" not in thread["items"]
