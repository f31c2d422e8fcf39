"""The request types that answer JSON: reads and edits, each one store call where it can.

On the SDK's public types, serialised as the SDK serialises them; hidden context items
(notes for the model) never leave the server.
"""

from datetime import datetime
from typing import Literal, assert_never

from chatkit.store import NotFoundError
from chatkit.types import (
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    BaseReq,
    HiddenContextItem,
    InputTranscribeReq,
    ItemsFeedbackReq,
    ItemsListReq,
    NonStreamingReq,
    Page,
    SDKHiddenContextItem,
    Thread,
    ThreadItem,
    ThreadMetadata,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsSyncCustomActionReq,
    ThreadsUpdateReq,
)
from pydantic import BaseModel, ConfigDict, Field

from chatkit_backend.attachments.service import AttachmentService
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import NotFound, NotSupported
from chatkit_backend.store.sql_store import SQLStore, new_id

# The SDK's page size when a request names none.
DEFAULT_PAGE_SIZE = 20
EMPTY = b"{}"


class NewThreadParams(BaseModel):
    """Nothing: a misspelt `input` is refused, not taken for a thread without a message."""

    model_config = ConfigDict(extra="forbid")


class ThreadsCreateEmptyReq(BaseReq):
    """`threads.create` without `input` (a shape of the original design notes): a new,
    empty thread, answered as JSON. With `input` it is the SDK's streamed request."""

    type: Literal["threads.create"] = "threads.create"
    params: NewThreadParams = Field(default_factory=NewThreadParams)


def serialise(value: BaseModel) -> bytes:
    """As the SDK writes responses: by alias, no nulls, no integration metadata."""
    json = value.model_dump_json(
        by_alias=True, exclude_none=True, context={"exclude_metadata": True}
    )
    return json.encode()


def thread_response(thread: ThreadMetadata, items: Page[ThreadItem] | None = None) -> Thread:
    """A thread as the client sees it: its public fields and visible items."""
    page = items if items is not None else Page[ThreadItem]()
    return Thread(
        id=thread.id,
        title=thread.title,
        created_at=thread.created_at,
        status=thread.status,
        allowed_image_domains=thread.allowed_image_domains,
        items=visible(page),
    )


def visible(page: Page[ThreadItem]) -> Page[ThreadItem]:
    page.data = [
        item for item in page.data if not isinstance(item, HiddenContextItem | SDKHiddenContextItem)
    ]
    return page


class JsonRequests:
    """Answers the JSON request types from the store."""

    def __init__(self, store: SQLStore, files: AttachmentService) -> None:
        self.store = store
        self.files = files

    async def handle(
        self, request: NonStreamingReq | ThreadsCreateEmptyReq, context: RequestContext
    ) -> bytes:
        store = self.store
        match request:
            case ThreadsCreateEmptyReq():
                # Naive, as the SDK stamps threads (and as a streamed threads.create does).
                thread = ThreadMetadata(id=new_id("thread"), created_at=datetime.now())  # noqa: DTZ005
                await store.save_thread(thread, context)
                return serialise(thread_response(thread))
            case ThreadsGetByIdReq():
                thread_id = request.params.thread_id
                try:
                    thread, items = await store.load_thread_page(
                        thread_id, None, DEFAULT_PAGE_SIZE, "asc", context
                    )
                except NotFoundError:
                    raise NotFound(f"Thread {thread_id} not found") from None
                return serialise(thread_response(thread, items))
            case ThreadsListReq():
                params = request.params
                threads = await store.load_threads(
                    params.limit or DEFAULT_PAGE_SIZE, params.after, params.order, context
                )
                page = Page[Thread](
                    data=[thread_response(thread) for thread in threads.data],
                    has_more=threads.has_more,
                    after=threads.after,
                )
                return serialise(page)
            case ItemsListReq():
                listed = request.params
                try:
                    _, items = await store.load_thread_page(
                        listed.thread_id,
                        listed.after,
                        listed.limit or DEFAULT_PAGE_SIZE,
                        listed.order,
                        context,
                    )
                except NotFoundError:
                    raise NotFound(f"Thread {listed.thread_id} not found") from None
                return serialise(visible(items))
            case ThreadsUpdateReq():
                thread = await store.rename_thread(
                    request.params.thread_id, request.params.title, context
                )
                return serialise(thread_response(thread))
            case ThreadsDeleteReq():
                # The records go with the thread; then the bytes they named.
                thread_id = request.params.thread_id
                attachment_ids = await store.attachments.ids_in_thread(thread_id, context.owner)
                await store.delete_thread(thread_id, context)
                await self.files.delete_files(attachment_ids)
                return EMPTY
            case ItemsFeedbackReq():
                rated = request.params
                await store.save_feedback(rated.thread_id, rated.item_ids, rated.kind, context)
                return EMPTY
            case AttachmentsCreateReq():
                attachment = await self.files.create_attachment(request.params, context)
                await store.save_attachment(attachment, context)
                return serialise(attachment)
            case AttachmentsDeleteReq():
                await self.files.delete_attachment(request.params.attachment_id, context)
                await store.delete_attachment(request.params.attachment_id, context)
                return EMPTY
            case InputTranscribeReq():
                raise NotSupported("Dictation is not supported by the configured model provider")
            case ThreadsSyncCustomActionReq():
                raise NotSupported("This server's agents define no widget actions")
            case _:
                assert_never(request)
