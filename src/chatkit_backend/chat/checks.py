"""Checks that must fail before a stream starts: a 4xx, not a broken stream."""

from collections.abc import Awaitable, Callable
from typing import assert_never

from chatkit.store import NotFoundError
from chatkit.types import (
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    ChatKitReq,
    ClientToolCallItem,
    InputTranscribeReq,
    ItemsFeedbackReq,
    ItemsListReq,
    StructuredInputItem,
    ThreadItem,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsCustomActionReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    ThreadsSyncCustomActionReq,
    ThreadsUpdateReq,
    UserMessageInput,
    UserMessageItem,
)

from chatkit_backend.chat.json_requests import ThreadsCreateEmptyReq
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import InvalidRequest, NotFound, NotSupported
from chatkit_backend.settings import Settings
from chatkit_backend.store.attachments import AttachmentRecord
from chatkit_backend.store.sql_store import SQLStore

MAX_TITLE_LENGTH = 500
# Each id is one bound parameter: PostgreSQL (asyncpg) takes at most 32767, so 40,000
# ids were a database error; a turn's answer is a handful of items.
MAX_FEEDBACK_ITEMS = 100
MAX_ATTACHMENTS_PER_MESSAGE = 10


class RequestChecker:
    """Refuses what would otherwise fail halfway through the SDK's handling."""

    def __init__(
        self,
        store: SQLStore,
        settings: Settings,
        confirm_upload: Callable[[AttachmentRecord], Awaitable[AttachmentRecord]] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        # Checks a file the browser uploaded to the object store itself, on first use.
        self.confirm_upload = confirm_upload

    async def check(
        self, request: ChatKitReq | ThreadsCreateEmptyReq, context: RequestContext
    ) -> None:
        """Raise a `RequestError` for a request that cannot succeed; clamp page sizes."""
        match request:
            case ThreadsCreateEmptyReq():
                pass  # a new thread, nothing in it yet
            case ThreadsCreateReq():
                await self._input(request.params.input, context, None)
            case ThreadsAddUserMessageReq():
                # The turn's first transaction finds the thread (404) as it claims it.
                await self._input(request.params.input, context, request.params.thread_id)
            case ThreadsGetByIdReq():
                pass  # the read itself finds the thread, or answers 404
            case ThreadsDeleteReq():
                await self._thread(request.params.thread_id, context)
            case ThreadsUpdateReq():
                await self._thread(request.params.thread_id, context)
                if len(request.params.title) > MAX_TITLE_LENGTH:
                    raise InvalidRequest(f"title is longer than {MAX_TITLE_LENGTH} characters")
            case ThreadsListReq():
                request.params.limit = self._page_size(request.params.limit)
            case ItemsListReq():
                request.params.limit = self._page_size(request.params.limit)
            case ItemsFeedbackReq():
                await self._thread(request.params.thread_id, context)
                ids = request.params.item_ids
                if len(ids) > MAX_FEEDBACK_ITEMS:
                    raise InvalidRequest(f"Feedback names at most {MAX_FEEDBACK_ITEMS} items")
                found = await self.store.existing_item_ids(request.params.thread_id, ids, context)
                if missing := [item_id for item_id in ids if item_id not in found]:
                    raise NotFound(f"Item {missing[0]} not found")
            case ThreadsRetryAfterItemReq():
                await self._thread(request.params.thread_id, context)
                item = await self._item(request.params.thread_id, request.params.item_id, context)
                if not isinstance(item, UserMessageItem):
                    raise InvalidRequest("retry_after_item needs the id of a user message")
            case ThreadsAddStructuredInputReq():
                await self._thread(request.params.thread_id, context)
                item = await self._item(request.params.thread_id, request.params.item_id, context)
                if not isinstance(item, StructuredInputItem) or item.status != "pending":
                    item_id = request.params.item_id
                    raise InvalidRequest(f"Item {item_id} is not a pending structured input")
            case ThreadsAddClientToolOutputReq():
                await self._thread(request.params.thread_id, context)
                await self._pending_client_tool_call(request.params.thread_id, context)
            case ThreadsCustomActionReq() | ThreadsSyncCustomActionReq():
                await self._thread(request.params.thread_id, context)
                raise NotSupported("This server's agents define no widget actions")
            case AttachmentsCreateReq():
                pass  # size, type and name are the attachment store's to judge
            case AttachmentsDeleteReq():
                await self._attachment(request.params.attachment_id, context)
            case InputTranscribeReq():
                raise NotSupported("Dictation is not supported by the configured model provider")
            case _:
                assert_never(request)

    def _page_size(self, limit: int | None) -> int | None:
        if limit is not None and limit < 0:
            raise InvalidRequest("limit must not be negative")
        # 0 and None mean the SDK's default page size.
        return min(limit, self.settings.max_page_size) if limit else limit

    async def _thread(self, thread_id: str, context: RequestContext) -> None:
        try:
            await self.store.load_thread(thread_id, context)
        except NotFoundError:
            raise NotFound(f"Thread {thread_id} not found") from None

    async def _item(self, thread_id: str, item_id: str, context: RequestContext) -> ThreadItem:
        try:
            return await self.store.load_item(thread_id, item_id, context)
        except NotFoundError:
            raise NotFound(f"Item {item_id} not found") from None

    async def _attachment(self, attachment_id: str, context: RequestContext) -> None:
        if await self.store.attachments.load(attachment_id, context.owner) is None:
            raise NotFound(f"Attachment {attachment_id} not found")

    async def _input(
        self, input: UserMessageInput, context: RequestContext, thread_id: str | None
    ) -> None:
        # Blank text was streamed, stored and answered, and titled the thread "New
        # conversation". Files alone are a message; tag parts count as text.
        if not input.attachments and not any(part.text.strip() for part in input.content):
            raise InvalidRequest("A message needs text or an attachment; this one is empty")
        await self._sendable(input.attachments, context, thread_id)
        model = input.inference_options.model
        if model is not None and model not in self.settings.allowed_models:
            allowed = ", ".join(sorted(self.settings.allowed_models))
            raise InvalidRequest(
                f"Model {model[:100]!r} is not allowed here; choose one of: {allowed}"
            )
        # Text and tag parts alike end up in the model's prompt, and so does a quote.
        length = sum(len(part.text) for part in input.content) + len(input.quoted_text or "")
        if length > self.settings.max_message_chars:
            limit = self.settings.max_message_chars
            raise InvalidRequest(f"The message is longer than {limit} characters")

    async def _sendable(
        self, attachment_ids: list[str], context: RequestContext, thread_id: str | None
    ) -> None:
        """The caller's own, fully uploaded attachments, each sent into one thread only."""
        if len(attachment_ids) > MAX_ATTACHMENTS_PER_MESSAGE:
            raise InvalidRequest(
                f"A message can carry at most {MAX_ATTACHMENTS_PER_MESSAGE} attachments"
            )
        if len(set(attachment_ids)) != len(attachment_ids):
            raise InvalidRequest("The same attachment is listed twice")
        for attachment_id in attachment_ids:
            record = await self.store.attachments.load(attachment_id, context.owner)
            if record is None:
                raise NotFound(f"Attachment {attachment_id} not found")
            if not record.uploaded and self.confirm_upload is not None:
                record = await self.confirm_upload(record)
            if not record.uploaded:
                raise InvalidRequest(f"Attachment {attachment_id} has not finished uploading")
            # Deleting a thread deletes its attachments: one in two threads would vanish
            # from the other.
            if record.thread_id not in (None, thread_id):
                raise InvalidRequest(f"Attachment {attachment_id} belongs to another thread")

    async def _pending_client_tool_call(self, thread_id: str, context: RequestContext) -> None:
        page = await self.store.load_thread_items(thread_id, None, 1, "desc", context)
        last = page.data[0] if page.data else None
        if not isinstance(last, ClientToolCallItem) or last.status != "pending":
            raise InvalidRequest("The thread has no pending client tool call")
