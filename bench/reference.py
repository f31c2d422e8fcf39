"""The reference: openai-chatkit wired exactly as its documentation shows.

    OPENAI_BASE_URL=http://127.0.0.1:9000/v1 OPENAI_API_KEY=sk-bench \
        uvicorn bench.reference:app

A `ChatKitServer` subclass whose `respond()` runs an Agents SDK agent with
`Runner.run_streamed` and converts it with `stream_agent_response`, on the SDK's
default model provider (so the same fake upstream answers it); a FastAPI endpoint that
hands the body to `server.process()` and returns a `StreamingResponse` or a `Response`,
as in the SDK's server guide; and an in-memory `Store`, written for the benchmark, that
does as little as a correct store can (dictionaries; copies out, so callers cannot
change what is stored).

History follows the SDK's "respond to a user message" guide: the newest 20 items,
oldest first, through `simple_to_agent_input`. The benchmark's threads stay under 20
items, so the model sees the same history as from our server.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agents import Agent, Runner
from chatkit.agents import AgentContext, simple_to_agent_input, stream_agent_response
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    Attachment,
    Page,
    Thread,
    ThreadItem,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse


@dataclass
class _ThreadState:
    thread: ThreadMetadata
    items: dict[str, ThreadItem] = field(default_factory=dict)  # in insertion order


def _metadata(thread: ThreadMetadata) -> ThreadMetadata:
    # `save_thread` is sometimes handed a full `Thread`; keep only its metadata.
    if isinstance(thread, Thread):
        return ThreadMetadata(**thread.model_dump(exclude={"items"}))
    return thread.model_copy(deep=True)


def _page(values: list[Any], after: str | None, limit: int, order: str) -> Page[Any]:
    ordered = values if order == "asc" else values[::-1]
    start = 0
    if after is not None:
        ids = [value.id for value in ordered]
        start = ids.index(after) + 1 if after in ids else len(ids)
    chunk = ordered[start : start + limit + 1]
    has_more = len(chunk) > limit
    chunk = [value.model_copy(deep=True) for value in chunk[:limit]]
    return Page(data=chunk, has_more=has_more, after=chunk[-1].id if chunk else None)


class MemoryStore(Store[dict[str, Any]]):
    """Threads and items in dictionaries, for one process's lifetime."""

    def __init__(self) -> None:
        self.threads: dict[str, _ThreadState] = {}
        self.attachments: dict[str, Attachment] = {}

    def _state(self, thread_id: str) -> _ThreadState:
        state = self.threads.get(thread_id)
        if state is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return state

    async def load_thread(self, thread_id: str, context: dict[str, Any]) -> ThreadMetadata:
        return self._state(thread_id).thread.model_copy(deep=True)

    async def save_thread(self, thread: ThreadMetadata, context: dict[str, Any]) -> None:
        state = self.threads.get(thread.id)
        if state is None:
            self.threads[thread.id] = _ThreadState(_metadata(thread))
        else:
            state.thread = _metadata(thread)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: dict[str, Any]
    ) -> Page[ThreadMetadata]:
        threads = [state.thread for state in self.threads.values()]
        return _page(threads, after, limit, order)

    async def delete_thread(self, thread_id: str, context: dict[str, Any]) -> None:
        self.threads.pop(thread_id, None)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: dict[str, Any]
    ) -> Page[ThreadItem]:
        items = list(self._state(thread_id).items.values())
        return _page(items, after, limit, order)

    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: dict[str, Any]
    ) -> None:
        self._state(thread_id).items[item.id] = item.model_copy(deep=True)

    async def save_item(self, thread_id: str, item: ThreadItem, context: dict[str, Any]) -> None:
        self._state(thread_id).items[item.id] = item.model_copy(deep=True)

    async def load_item(self, thread_id: str, item_id: str, context: dict[str, Any]) -> ThreadItem:
        item = self._state(thread_id).items.get(item_id)
        if item is None:
            raise NotFoundError(f"Item {item_id} not found")
        return item.model_copy(deep=True)

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: dict[str, Any]
    ) -> None:
        self._state(thread_id).items.pop(item_id, None)

    async def save_attachment(self, attachment: Attachment, context: dict[str, Any]) -> None:
        self.attachments[attachment.id] = attachment.model_copy(deep=True)

    async def load_attachment(self, attachment_id: str, context: dict[str, Any]) -> Attachment:
        if attachment_id not in self.attachments:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return self.attachments[attachment_id].model_copy(deep=True)

    async def delete_attachment(self, attachment_id: str, context: dict[str, Any]) -> None:
        self.attachments.pop(attachment_id, None)


class MyChatKitServer(ChatKitServer[dict[str, Any]]):
    assistant_agent = Agent[AgentContext[dict[str, Any]]](
        model="gpt-4.1-mini",
        name="Assistant",
        instructions="You are a helpful assistant",
    )

    async def respond(
        self,
        thread: ThreadMetadata,
        input: UserMessageItem | None,
        context: dict[str, Any],
    ) -> AsyncIterator[ThreadStreamEvent]:
        items_page = await self.store.load_thread_items(
            thread.id, after=None, limit=20, order="desc", context=context
        )
        items = list(reversed(items_page.data))
        agent_context: AgentContext[dict[str, Any]] = AgentContext(
            thread=thread, store=self.store, request_context=context
        )
        result = Runner.run_streamed(
            self.assistant_agent,
            await simple_to_agent_input(items),
            context=agent_context,
        )
        async for event in stream_agent_response(agent_context, result):
            yield event


app = FastAPI()
data_store = MemoryStore()
server = MyChatKitServer(data_store)


@app.post("/chatkit")
async def chatkit_endpoint(request: Request) -> Response:
    result = await server.process(await request.body(), {})
    if isinstance(result, StreamingResult):
        return StreamingResponse(result, media_type="text/event-stream")
    return Response(content=result.json, media_type="application/json")
