"""A reusable contract for any `chatkit.store.Store[RequestContext]`.

Subclass `StoreContract` (with a name pytest collects, `Test...`) and override the
`store` fixture to yield the implementation under test and release it afterwards:

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store(self) -> AsyncIterator[Store[RequestContext]]:
            store = MyStore()
            yield store
            await store.close()

Every test here uses only the SDK's `Store` interface, on fresh random owners, so the
tests share one database without seeing each other's rows and need no clean-up.
"""

import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from typing import TypeVar

import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    ActiveStatus,
    Annotation,
    AssistantMessageContent,
    AssistantMessageItem,
    Attachment,
    AttachmentUploadDescriptor,
    ClientToolCallItem,
    ClosedStatus,
    CustomSummary,
    CustomTask,
    EndOfTurnItem,
    EntitySource,
    FileAttachment,
    FileSource,
    FileTask,
    GeneratedImage,
    GeneratedImageItem,
    HiddenContextItem,
    ImageAttachment,
    ImageTask,
    InferenceOptions,
    LockedStatus,
    Page,
    SDKHiddenContextItem,
    SearchTask,
    StructuredInputAnswer,
    StructuredInputFreeform,
    StructuredInputItem,
    StructuredInputMultipleChoice,
    StructuredInputMultipleChoiceOption,
    TaskItem,
    ThoughtTask,
    Thread,
    ThreadItem,
    ThreadMetadata,
    ThreadStatus,
    ToolChoice,
    URLSource,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
    WidgetItem,
    Workflow,
    WorkflowItem,
)
from chatkit.widgets import Card, Text
from pydantic import AnyUrl

from chatkit_backend.context import Owner, RequestContext

T = TypeVar("T")

# The SDK builds naive local datetimes; microseconds must survive too.
T0 = datetime(2025, 3, 4, 5, 6, 7, 891011)


# Builders


def random_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def random_owner() -> RequestContext:
    return RequestContext(Owner(tenant_id=random_id("tenant"), user_id=random_id("user")))


def make_thread(
    created_at: datetime = T0,
    title: str | None = "A thread",
    status: ThreadStatus | None = None,
) -> ThreadMetadata:
    return ThreadMetadata(
        id=random_id("thr"),
        title=title,
        created_at=created_at,
        status=status or ActiveStatus(),
        allowed_image_domains=["images.example.com", "cdn.example.org"],
        metadata={"topic": "tests", "nested": {"n": 1, "flags": [True, None]}},
    )


def make_message(thread_id: str, text: str = "hello", created_at: datetime = T0) -> ThreadItem:
    return AssistantMessageItem(
        id=random_id("msg"),
        thread_id=thread_id,
        created_at=created_at,
        content=[AssistantMessageContent(text=text)],
    )


def make_file(thread_id: str | None = None) -> FileAttachment:
    return FileAttachment(
        id=random_id("atc"),
        name="notes.txt",
        mime_type="text/plain",
        thread_id=thread_id,
        upload_descriptor=AttachmentUploadDescriptor(
            url=AnyUrl("https://uploads.example.com/notes"),
            method="PUT",
            headers={"x-upload": "1"},
        ),
        metadata={"storage_key": "tenant/notes.txt", "bytes": 120},
    )


def make_image(thread_id: str | None = None) -> ImageAttachment:
    return ImageAttachment(
        id=random_id("atc"),
        name="cat.png",
        mime_type="image/png",
        thread_id=thread_id,
        preview_url=AnyUrl("https://images.example.com/cat.png"),
        metadata={"width": 640, "height": 480},
    )


def make_every_item(thread_id: str) -> list[ThreadItem]:
    """One of each item type the SDK defines, filled in as far as is reasonable."""
    url_source = URLSource(
        title="Docs", url="https://example.com/docs", attribution="Example", group="web"
    )
    file_source = FileSource(title="Report", filename="report.pdf", description="Q3")
    moments = (T0 + timedelta(seconds=n) for n in range(100))
    return [
        UserMessageItem(
            id=random_id("msg"),
            thread_id=thread_id,
            created_at=next(moments),
            content=[
                UserMessageTextContent(text="Compare these, please"),
                UserMessageTagContent(
                    id="tag_1",
                    text="@Ada",
                    data={"kind": "person", "ids": [1, 2]},
                    group="people",
                    interactive=True,
                ),
            ],
            attachments=[make_image(thread_id)],
            quoted_text="the earlier answer",
            inference_options=InferenceOptions(tool_choice=ToolChoice(id="search"), model="m-1"),
        ),
        AssistantMessageItem(
            id=random_id("msg"),
            thread_id=thread_id,
            created_at=next(moments),
            content=[
                AssistantMessageContent(
                    text="See the docs and the report.",
                    annotations=[
                        Annotation(source=url_source, index=8),
                        Annotation(source=file_source),
                        Annotation(
                            source=EntitySource(
                                id="ent_1",
                                title="Ada",
                                icon="user",
                                label="Person",
                                interactive=True,
                                data={"href": "/people/1"},
                            )
                        ),
                    ],
                )
            ],
        ),
        ClientToolCallItem(
            id=random_id("tc"),
            thread_id=thread_id,
            created_at=next(moments),
            status="completed",
            call_id="call_1",
            name="get_location",
            arguments={"precise": True, "fields": ["city"]},
            output={"city": "Oslo"},
        ),
        WidgetItem(
            id=random_id("msg"),
            thread_id=thread_id,
            created_at=next(moments),
            widget=Card(children=[Text(value="Weather", weight="bold"), Text(value="Sunny")]),
            copy_text="Weather: Sunny",
        ),
        WorkflowItem(
            id=random_id("wf"),
            thread_id=thread_id,
            created_at=next(moments),
            workflow=Workflow(
                type="custom",
                tasks=[
                    CustomTask(
                        title="Plan", icon="lightbulb", content="Steps", status_indicator="complete"
                    ),
                    SearchTask(
                        title_query="weather", queries=["oslo weather"], sources=[url_source]
                    ),
                    ThoughtTask(title="Thinking", content="Compare the two."),
                    FileTask(sources=[file_source]),
                    ImageTask(title="Drawing"),
                ],
                summary=CustomSummary(title="Done", icon="check"),
                expanded=True,
            ),
        ),
        TaskItem(
            id=random_id("tsk"),
            thread_id=thread_id,
            created_at=next(moments),
            task=CustomTask(title="Standalone", content="A task item"),
        ),
        GeneratedImageItem(
            id=random_id("msg"),
            thread_id=thread_id,
            created_at=next(moments),
            image=GeneratedImage(id="img_1", url="https://images.example.com/gen.png"),
        ),
        StructuredInputItem(
            id=random_id("msg"),
            thread_id=thread_id,
            created_at=next(moments),
            status="answered",
            inputs=[
                StructuredInputMultipleChoice(
                    id="colors",
                    question="Which colors?",
                    options=[
                        StructuredInputMultipleChoiceOption(value="red"),
                        StructuredInputMultipleChoiceOption(value="blue"),
                    ],
                    multiple=True,
                    answer=StructuredInputAnswer(values=["red", "blue"]),
                ),
                StructuredInputFreeform(
                    id="why",
                    question="Why?",
                    description="Optional",
                    answer=StructuredInputAnswer(skipped=True),
                ),
            ],
        ),
        HiddenContextItem(
            id=random_id("msg"),
            thread_id=thread_id,
            created_at=next(moments),
            content={"note": "for the model", "list": [1, "two", None, 3.5]},
        ),
        SDKHiddenContextItem(
            id=random_id("shcx"),
            thread_id=thread_id,
            created_at=next(moments),
            content="The user changed the date.",
        ),
        EndOfTurnItem(id=random_id("msg"), thread_id=thread_id, created_at=next(moments)),
    ]


def without_items(thread: Thread) -> ThreadMetadata:
    return ThreadMetadata.model_validate(thread.model_dump(exclude={"items"}))


async def walk_pages(
    load_page: Callable[[str | None], Awaitable[Page[T]]],
    limit: int,
    expected_ids: Sequence[str],
    id_of: Callable[[T], str],
) -> None:
    """Follow `after` from the first page to the last, checking each page on the way.

    Each page must hold the next `limit` expected ids in order, `has_more` must say
    whether any remain, and `after` must name the page's last row while more follow and
    be None on the last page (the SDK's convention; clients stop on it).
    """
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await load_page(after)
        ids = [id_of(row) for row in page.data]
        assert ids == list(expected_ids[len(seen) : len(seen) + limit]), f"after={after!r}"
        seen.extend(ids)
        assert page.has_more is (len(seen) < len(expected_ids))
        assert page.after == (ids[-1] if page.has_more else None)
        if not page.has_more:
            return
        after = page.after


# The contract


class StoreContract(ABC):
    """The behaviour every `Store[RequestContext]` owes the ChatKit server."""

    @pytest.fixture
    @abstractmethod
    def store(self) -> AsyncIterator[Store[RequestContext]]:
        """Yield the store under test, and release what it holds once the test is done."""

    @pytest.fixture
    def owner(self) -> RequestContext:
        return random_owner()

    @pytest.fixture(params=["other-user-same-tenant", "same-user-other-tenant"])
    def intruder(self, request: pytest.FixtureRequest, owner: RequestContext) -> RequestContext:
        """Another owner: one identity field matches `owner`, the other doesn't."""
        if request.param == "other-user-same-tenant":
            return RequestContext(Owner(tenant_id=owner.owner.tenant_id, user_id=random_id("user")))
        return RequestContext(Owner(tenant_id=random_id("tenant"), user_id=owner.owner.user_id))

    @pytest.fixture
    async def thread(self, store: Store[RequestContext], owner: RequestContext) -> ThreadMetadata:
        thread = make_thread()
        await store.save_thread(thread, owner)
        return thread

    async def item_ids(
        self, store: Store[RequestContext], thread_id: str, context: RequestContext
    ) -> list[str]:
        page = await store.load_thread_items(thread_id, None, 1000, "asc", context)
        return [item.id for item in page.data]

    # Threads

    @pytest.mark.parametrize(
        "status",
        [ActiveStatus(), LockedStatus(reason="read only"), ClosedStatus(reason="archived")],
        ids=["active", "locked", "closed"],
    )
    async def test_thread_metadata_round_trips(
        self, store: Store[RequestContext], owner: RequestContext, status: ThreadStatus
    ) -> None:
        thread = make_thread(status=status)
        await store.save_thread(thread, owner)

        assert await store.load_thread(thread.id, owner) == thread

    async def test_thread_without_title_or_extras_round_trips(
        self, store: Store[RequestContext], owner: RequestContext
    ) -> None:
        thread = ThreadMetadata(id=random_id("thr"), created_at=T0)
        await store.save_thread(thread, owner)

        assert await store.load_thread(thread.id, owner) == thread

    async def test_save_thread_is_an_upsert(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        updated = thread.model_copy(
            update={"title": "Renamed", "status": LockedStatus(), "metadata": {"v": 2}}
        )
        await store.save_thread(updated, owner)

        assert await store.load_thread(thread.id, owner) == updated
        threads = await store.load_threads(10, None, "asc", owner)
        assert threads.data == [updated]

    async def test_save_thread_ignores_the_items_of_a_full_thread(
        self, store: Store[RequestContext], owner: RequestContext
    ) -> None:
        thread_id = random_id("thr")
        items = [make_message(thread_id, "in the page"), make_message(thread_id, "also")]
        full = Thread(
            id=thread_id,
            title="Full",
            created_at=T0,
            metadata={"k": "v"},
            items=Page[ThreadItem](data=items, has_more=True, after=items[-1].id),
        )
        await store.save_thread(full, owner)

        loaded = await store.load_thread(thread_id, owner)
        assert loaded == without_items(full)
        assert await self.item_ids(store, thread_id, owner) == []
        for item in items:
            with pytest.raises(NotFoundError):
                await store.load_item(thread_id, item.id, owner)

    async def test_load_missing_thread_raises(
        self, store: Store[RequestContext], owner: RequestContext
    ) -> None:
        with pytest.raises(NotFoundError):
            await store.load_thread(random_id("thr"), owner)

    async def test_load_threads_for_an_owner_without_threads_is_empty(
        self, store: Store[RequestContext], owner: RequestContext
    ) -> None:
        for order in ("asc", "desc"):
            page = await store.load_threads(10, None, order, owner)
            assert page == Page[ThreadMetadata](data=[], has_more=False, after=None)

    async def test_load_threads_desc_gives_newest_first(
        self, store: Store[RequestContext], owner: RequestContext
    ) -> None:
        threads = [make_thread(created_at=T0 + timedelta(minutes=n)) for n in range(3)]
        for thread in threads:
            await store.save_thread(thread, owner)

        newest_first = await store.load_threads(10, None, "desc", owner)
        assert (newest_first.data, newest_first.has_more, newest_first.after) == (
            threads[::-1],
            False,
            None,
        )
        oldest_first = await store.load_threads(10, None, "asc", owner)
        assert (oldest_first.data, oldest_first.after) == (threads, None)

    @pytest.mark.parametrize("order", ["asc", "desc"])
    @pytest.mark.parametrize("limit", [1, 2, 5, 50])
    @pytest.mark.parametrize("same_created_at", [False, True], ids=["distinct", "ties"])
    async def test_walking_thread_pages_visits_each_thread_once(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        order: str,
        limit: int,
        same_created_at: bool,
    ) -> None:
        ids: list[str] = []
        for n in range(5):
            thread = make_thread(created_at=T0 if same_created_at else T0 + timedelta(seconds=n))
            await store.save_thread(thread, owner)
            ids.append(thread.id)
        expected = ids if order == "asc" else ids[::-1]

        await walk_pages(
            lambda after: store.load_threads(limit, after, order, owner),
            limit,
            expected,
            lambda thread: thread.id,
        )

    async def test_delete_thread_removes_its_items_and_attachments(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        items = [make_message(thread.id, "one"), make_message(thread.id, "two")]
        for item in items:
            await store.add_thread_item(thread.id, item, owner)
        tied = make_file(thread_id=thread.id)
        loose = make_image()
        await store.save_attachment(tied, owner)
        await store.save_attachment(loose, owner)
        other = make_thread()
        await store.save_thread(other, owner)
        kept = make_message(other.id, "kept")
        await store.add_thread_item(other.id, kept, owner)

        await store.delete_thread(thread.id, owner)

        with pytest.raises(NotFoundError):
            await store.load_thread(thread.id, owner)
        assert await self.item_ids(store, thread.id, owner) == []
        for item in items:
            with pytest.raises(NotFoundError):
                await store.load_item(thread.id, item.id, owner)
        with pytest.raises(NotFoundError):
            await store.load_attachment(tied.id, owner)
        assert await store.load_attachment(loose.id, owner) == loose
        assert await store.load_thread(other.id, owner) == other
        assert await store.load_item(other.id, kept.id, owner) == kept
        assert (await store.load_threads(10, None, "asc", owner)).data == [other]

    async def test_delete_missing_thread_is_a_no_op(
        self, store: Store[RequestContext], owner: RequestContext
    ) -> None:
        await store.delete_thread(random_id("thr"), owner)

    # Items

    async def test_every_item_type_round_trips(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        items = make_every_item(thread.id)
        for item in items:
            await store.add_thread_item(thread.id, item, owner)

        for item in items:
            assert await store.load_item(thread.id, item.id, owner) == item
        page = await store.load_thread_items(thread.id, None, 100, "asc", owner)
        assert page.data == items
        assert page.has_more is False

    async def test_every_item_type_round_trips_through_save_item(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        items = make_every_item(thread.id)
        for item in items:
            await store.save_item(thread.id, item, owner)

        assert (await store.load_thread_items(thread.id, None, 100, "asc", owner)).data == items

    async def test_add_thread_item_is_an_upsert_that_keeps_the_position(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        items = [make_message(thread.id, text) for text in ("a", "b", "c")]
        for item in items:
            await store.add_thread_item(thread.id, item, owner)

        changed = items[0].model_copy(update={"content": [AssistantMessageContent(text="a2")]})
        await store.add_thread_item(thread.id, changed, owner)

        page = await store.load_thread_items(thread.id, None, 10, "asc", owner)
        assert page.data == [changed, items[1], items[2]]

    async def test_save_item_is_an_upsert_that_keeps_the_position(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        first, middle, last = (make_message(thread.id, text) for text in ("a", "b", "c"))
        await store.add_thread_item(thread.id, first, owner)
        await store.save_item(thread.id, middle, owner)  # a new id: inserted
        await store.add_thread_item(thread.id, last, owner)

        changed = middle.model_copy(update={"content": [AssistantMessageContent(text="b2")]})
        await store.save_item(thread.id, changed, owner)

        page = await store.load_thread_items(thread.id, None, 10, "asc", owner)
        assert page.data == [first, changed, last]
        assert await store.load_item(thread.id, middle.id, owner) == changed

    async def test_load_missing_item_raises(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        with pytest.raises(NotFoundError):
            await store.load_item(thread.id, random_id("msg"), owner)

    async def test_an_item_is_only_found_in_its_own_thread(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        other = make_thread()
        await store.save_thread(other, owner)
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)

        with pytest.raises(NotFoundError):
            await store.load_item(other.id, item.id, owner)
        assert await self.item_ids(store, other.id, owner) == []

    async def test_adding_an_item_to_a_missing_thread_raises(
        self, store: Store[RequestContext], owner: RequestContext
    ) -> None:
        thread_id = random_id("thr")
        with pytest.raises(NotFoundError):
            await store.add_thread_item(thread_id, make_message(thread_id), owner)

    async def test_delete_thread_item_removes_only_that_item(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        items = [make_message(thread.id, text) for text in ("a", "b", "c")]
        for item in items:
            await store.add_thread_item(thread.id, item, owner)

        await store.delete_thread_item(thread.id, items[1].id, owner)

        with pytest.raises(NotFoundError):
            await store.load_item(thread.id, items[1].id, owner)
        assert await self.item_ids(store, thread.id, owner) == [items[0].id, items[2].id]
        await store.delete_thread_item(thread.id, items[1].id, owner)  # again: a no-op

    async def test_delete_thread_item_needs_the_right_thread(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        other = make_thread()
        await store.save_thread(other, owner)
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)

        await store.delete_thread_item(other.id, item.id, owner)

        assert await store.load_item(thread.id, item.id, owner) == item

    # Item pagination

    async def test_an_empty_thread_has_an_empty_page(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        for order in ("asc", "desc"):
            page = await store.load_thread_items(thread.id, None, 10, order, owner)
            assert page == Page[ThreadItem](data=[], has_more=False, after=None)

    async def test_a_limit_larger_than_the_count_gives_one_full_page(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        items = [make_message(thread.id, str(n), T0 + timedelta(seconds=n)) for n in range(3)]
        for item in items:
            await store.add_thread_item(thread.id, item, owner)

        asc = await store.load_thread_items(thread.id, None, 100, "asc", owner)
        assert (asc.data, asc.has_more, asc.after) == (items, False, None)
        desc = await store.load_thread_items(thread.id, None, 100, "desc", owner)
        assert (desc.data, desc.has_more, desc.after) == (items[::-1], False, None)

    async def test_a_page_after_an_item_starts_right_after_it(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        items = [make_message(thread.id, str(n), T0 + timedelta(seconds=n)) for n in range(5)]
        for item in items:
            await store.add_thread_item(thread.id, item, owner)
        ids = [item.id for item in items]

        asc = await store.load_thread_items(thread.id, ids[1], 2, "asc", owner)
        assert ([i.id for i in asc.data], asc.has_more, asc.after) == (ids[2:4], True, ids[3])
        desc = await store.load_thread_items(thread.id, ids[3], 5, "desc", owner)
        assert ([i.id for i in desc.data], desc.has_more, desc.after) == (ids[2::-1], False, None)

    @pytest.mark.parametrize("order", ["asc", "desc"])
    @pytest.mark.parametrize("limit", [1, 2, 3, 7, 50])
    @pytest.mark.parametrize("created_at", ["increasing", "ties", "shuffled"])
    async def test_walking_item_pages_visits_each_item_once_in_insertion_order(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        thread: ThreadMetadata,
        order: str,
        limit: int,
        created_at: str,
    ) -> None:
        offsets = {
            "increasing": [0, 1, 2, 3, 4, 5, 6],
            "ties": [0] * 7,
            "shuffled": [5, 0, 6, 2, 2, 1, 4],
        }[created_at]
        ids: list[str] = []
        for n, offset in enumerate(offsets):
            item = make_message(thread.id, str(n), T0 + timedelta(seconds=offset))
            await store.add_thread_item(thread.id, item, owner)
            ids.append(item.id)
        expected = ids if order == "asc" else ids[::-1]

        await walk_pages(
            lambda after: store.load_thread_items(thread.id, after, limit, order, owner),
            limit,
            expected,
            lambda item: item.id,
        )

    # Attachments

    @pytest.mark.parametrize("make", [make_file, make_image], ids=["file", "image"])
    async def test_attachment_round_trips_with_its_metadata(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        thread: ThreadMetadata,
        make: Callable[[str | None], Attachment],
    ) -> None:
        for attachment in (make(None), make(thread.id)):
            await store.save_attachment(attachment, owner)
            loaded = await store.load_attachment(attachment.id, owner)
            assert loaded == attachment
            assert loaded.metadata == attachment.metadata

    async def test_save_attachment_is_an_upsert(
        self, store: Store[RequestContext], owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        pending = make_file()
        await store.save_attachment(pending, owner)
        uploaded = pending.model_copy(
            update={"upload_descriptor": None, "thread_id": thread.id, "metadata": {"done": True}}
        )
        await store.save_attachment(uploaded, owner)

        assert await store.load_attachment(pending.id, owner) == uploaded

    async def test_load_missing_attachment_raises(
        self, store: Store[RequestContext], owner: RequestContext
    ) -> None:
        with pytest.raises(NotFoundError):
            await store.load_attachment(random_id("atc"), owner)

    async def test_delete_attachment(
        self, store: Store[RequestContext], owner: RequestContext
    ) -> None:
        gone, kept = make_file(), make_image()
        await store.save_attachment(gone, owner)
        await store.save_attachment(kept, owner)

        await store.delete_attachment(gone.id, owner)

        with pytest.raises(NotFoundError):
            await store.load_attachment(gone.id, owner)
        assert await store.load_attachment(kept.id, owner) == kept
        await store.delete_attachment(gone.id, owner)  # again: a no-op

    # Isolation between owners

    async def test_another_owner_cannot_see_a_thread(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        with pytest.raises(NotFoundError):
            await store.load_thread(thread.id, intruder)
        for order in ("asc", "desc"):
            assert (await store.load_threads(50, None, order, intruder)).data == []

    async def test_another_owners_threads_are_left_out_of_pages(
        self, store: Store[RequestContext], owner: RequestContext, intruder: RequestContext
    ) -> None:
        mine: list[str] = []
        for n in range(3):
            own = make_thread(created_at=T0 + timedelta(seconds=2 * n))
            await store.save_thread(own, owner)
            mine.append(own.id)
            theirs = make_thread(created_at=T0 + timedelta(seconds=2 * n + 1))
            await store.save_thread(theirs, intruder)

        await walk_pages(
            lambda after: store.load_threads(1, after, "asc", owner), 1, mine, lambda t: t.id
        )

    async def test_another_owner_cannot_see_items(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)

        with pytest.raises(NotFoundError):
            await store.load_item(thread.id, item.id, intruder)
        for order in ("asc", "desc"):
            page = await store.load_thread_items(thread.id, None, 50, order, intruder)
            assert page.data == []
            assert page.has_more is False

    async def test_another_owner_cannot_add_an_item_to_a_thread(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        mine = make_message(thread.id, "mine")
        await store.add_thread_item(thread.id, mine, owner)
        planted = make_message(thread.id, "planted")

        with pytest.raises(NotFoundError):
            await store.add_thread_item(thread.id, planted, intruder)

        assert await self.item_ids(store, thread.id, owner) == [mine.id]
        assert await self.item_ids(store, thread.id, intruder) == []
        with pytest.raises(NotFoundError):
            await store.load_item(thread.id, planted.id, owner)

    async def test_another_owner_cannot_overwrite_an_item(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        item = make_message(thread.id, "original")
        await store.add_thread_item(thread.id, item, owner)
        forged = item.model_copy(update={"content": [AssistantMessageContent(text="forged")]})
        their_thread = make_thread()
        await store.save_thread(their_thread, intruder)

        # In the owner's thread, and under the same id in a thread the intruder owns.
        for thread_id in (thread.id, their_thread.id):
            for write in (store.save_item, store.add_thread_item):
                with suppress(NotFoundError):
                    await write(thread_id, forged, intruder)

        assert await store.load_item(thread.id, item.id, owner) == item
        assert await self.item_ids(store, thread.id, owner) == [item.id]

    async def test_another_owner_cannot_delete_an_item(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)

        with suppress(NotFoundError):
            await store.delete_thread_item(thread.id, item.id, intruder)

        assert await store.load_item(thread.id, item.id, owner) == item

    async def test_another_owner_cannot_overwrite_a_thread(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        forged = thread.model_copy(update={"title": "forged", "metadata": {"x": 1}})

        with suppress(NotFoundError):
            await store.save_thread(forged, intruder)

        assert await store.load_thread(thread.id, owner) == thread
        with pytest.raises(NotFoundError):
            await store.load_thread(thread.id, intruder)
        assert (await store.load_threads(10, None, "asc", intruder)).data == []

    async def test_another_owner_cannot_delete_a_thread(
        self,
        store: Store[RequestContext],
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)
        attachment = make_file(thread_id=thread.id)
        await store.save_attachment(attachment, owner)

        with suppress(NotFoundError):
            await store.delete_thread(thread.id, intruder)

        assert await store.load_thread(thread.id, owner) == thread
        assert await store.load_item(thread.id, item.id, owner) == item
        assert await store.load_attachment(attachment.id, owner) == attachment

    async def test_another_owner_cannot_touch_an_attachment(
        self, store: Store[RequestContext], owner: RequestContext, intruder: RequestContext
    ) -> None:
        attachment = make_image()
        await store.save_attachment(attachment, owner)
        forged = attachment.model_copy(update={"name": "forged.png", "metadata": {"x": 1}})

        with pytest.raises(NotFoundError):
            await store.load_attachment(attachment.id, intruder)
        with suppress(NotFoundError):
            await store.save_attachment(forged, intruder)
        with suppress(NotFoundError):
            await store.delete_attachment(attachment.id, intruder)

        assert await store.load_attachment(attachment.id, owner) == attachment
        with pytest.raises(NotFoundError):
            await store.load_attachment(attachment.id, intruder)
