"""`SQLStore` against the store contract, on SQLite and on PostgreSQL.

`SQLStoreContract` adds what `SQLStore` offers beyond the SDK's `Store`: feedback,
`existing_item_ids` and unguessable ids. The two `Test...` classes only pick the database.
"""

import re
from abc import abstractmethod
from collections.abc import AsyncIterator

import pytest
from chatkit.store import StoreItemType
from chatkit.types import ThreadMetadata

from chatkit_backend.context import RequestContext
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.sql_store import SQLStore
from chatkit_backend.store.tables import UNPREFIXED, Tables
from tests.store.store_contract import StoreContract, make_message, make_thread, random_id

# The SDK's prefixes, each followed by at least 96 random bits (24 hex digits).
ID_PREFIXES: dict[StoreItemType, str] = {
    "thread": "thr",
    "message": "msg",
    "tool_call": "tc",
    "workflow": "wf",
    "task": "tsk",
    "attachment": "atc",
    "sdk_hidden_context": "shcx",
}
MIN_HEX_DIGITS = 96 // 4


class SQLStoreContract(StoreContract):
    """The generic contract plus `SQLStore`'s own extras, on the database `database_url` names."""

    @pytest.fixture
    @abstractmethod
    def database_url(self) -> str:
        """The migrated database the tests run on."""

    @pytest.fixture
    def tables(self) -> Tables:
        """Our tables as that database names them."""
        return UNPREFIXED

    @pytest.fixture
    async def store(self, database_url: str, tables: Tables) -> AsyncIterator[SQLStore]:
        engine = create_engine(database_url)
        try:
            yield SQLStore(engine, tables=tables)
        finally:
            await engine.dispose()

    # Ids

    def test_ids_keep_the_sdk_prefixes_and_carry_96_random_bits(
        self, store: SQLStore, owner: RequestContext
    ) -> None:
        thread = make_thread()
        ids: list[str] = []
        for item_type, prefix in ID_PREFIXES.items():
            for _ in range(2000):
                if item_type == "thread":
                    new_id = store.generate_thread_id(owner)
                else:
                    new_id = store.generate_item_id(item_type, thread, owner)
                assert re.fullmatch(rf"{prefix}_[0-9a-f]{{{MIN_HEX_DIGITS},}}", new_id), new_id
                ids.append(new_id)

        assert len(set(ids)) == len(ids)

    # A thread with a page of its items (threads.get_by_id, items.list)

    @pytest.mark.parametrize("order", ["asc", "desc"])
    async def test_a_thread_page_has_a_cursor_only_while_more_items_follow(
        self, store: SQLStore, owner: RequestContext, thread: ThreadMetadata, order: str
    ) -> None:
        items = [make_message(thread.id, str(n)) for n in range(3)]
        for item in items:
            await store.add_thread_item(thread.id, item, owner)
        ids = [item.id for item in items]
        expected = ids if order == "asc" else ids[::-1]

        _, first = await store.load_thread_page(thread.id, None, 2, order, owner)
        assert ([i.id for i in first.data], first.has_more, first.after) == (
            expected[:2],
            True,
            expected[1],
        )
        _, last = await store.load_thread_page(thread.id, first.after, 2, order, owner)
        assert ([i.id for i in last.data], last.has_more, last.after) == (
            expected[2:],
            False,
            None,
        )

    # Feedback

    async def test_feedback_round_trips(
        self, store: SQLStore, owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        liked, disliked = make_message(thread.id, "good"), make_message(thread.id, "bad")
        for item in (liked, disliked):
            await store.add_thread_item(thread.id, item, owner)

        await store.save_feedback(thread.id, [liked.id], "positive", owner)
        await store.save_feedback(thread.id, [disliked.id], "negative", owner)

        assert await store.load_feedback(thread.id, owner) == {
            liked.id: "positive",
            disliked.id: "negative",
        }

    async def test_a_second_rating_replaces_the_first(
        self, store: SQLStore, owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        items = [make_message(thread.id, "a"), make_message(thread.id, "b")]
        for item in items:
            await store.add_thread_item(thread.id, item, owner)
        ids = [item.id for item in items]

        await store.save_feedback(thread.id, ids, "positive", owner)
        await store.save_feedback(thread.id, ids, "negative", owner)

        assert await store.load_feedback(thread.id, owner) == dict.fromkeys(ids, "negative")

    async def test_one_rating_may_name_an_item_twice(
        self, store: SQLStore, owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)

        await store.save_feedback(thread.id, [item.id, item.id], "positive", owner)

        assert await store.load_feedback(thread.id, owner) == {item.id: "positive"}

    async def test_a_thread_without_feedback_has_none(
        self, store: SQLStore, owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        await store.save_feedback(thread.id, [], "positive", owner)

        assert await store.load_feedback(thread.id, owner) == {}

    async def test_another_owner_sees_no_feedback(
        self,
        store: SQLStore,
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)
        await store.save_feedback(thread.id, [item.id], "positive", owner)

        assert await store.load_feedback(thread.id, intruder) == {}
        assert await store.load_feedback(thread.id, owner) == {item.id: "positive"}

    async def test_feedback_on_another_owners_items_is_not_stored(
        self,
        store: SQLStore,
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)

        await store.save_feedback(thread.id, [item.id], "negative", intruder)

        assert await store.load_feedback(thread.id, intruder) == {}
        assert await store.load_feedback(thread.id, owner) == {}

    async def test_delete_thread_removes_its_feedback(
        self, store: SQLStore, owner: RequestContext, thread: ThreadMetadata
    ) -> None:
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)
        await store.save_feedback(thread.id, [item.id], "negative", owner)

        await store.delete_thread(thread.id, owner)

        assert await store.load_feedback(thread.id, owner) == {}
        # The same ids again start from a clean slate.
        await store.save_thread(thread, owner)
        await store.add_thread_item(thread.id, item, owner)
        assert await store.load_feedback(thread.id, owner) == {}

    async def test_another_owners_delete_thread_keeps_the_feedback(
        self,
        store: SQLStore,
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        item = make_message(thread.id)
        await store.add_thread_item(thread.id, item, owner)
        await store.save_feedback(thread.id, [item.id], "positive", owner)

        await store.delete_thread(thread.id, intruder)

        assert await store.load_feedback(thread.id, owner) == {item.id: "positive"}

    # existing_item_ids

    async def test_existing_item_ids_returns_only_the_callers_ids_in_that_thread(
        self,
        store: SQLStore,
        owner: RequestContext,
        intruder: RequestContext,
        thread: ThreadMetadata,
    ) -> None:
        here = [make_message(thread.id, "a"), make_message(thread.id, "b")]
        for item in here:
            await store.add_thread_item(thread.id, item, owner)
        elsewhere_thread = make_thread()
        await store.save_thread(elsewhere_thread, owner)
        elsewhere = make_message(elsewhere_thread.id)
        await store.add_thread_item(elsewhere_thread.id, elsewhere, owner)
        their_thread = make_thread()
        await store.save_thread(their_thread, intruder)
        theirs = make_message(their_thread.id)
        await store.add_thread_item(their_thread.id, theirs, intruder)
        asked = [item.id for item in here] + [elsewhere.id, theirs.id, random_id("msg")]

        assert await store.existing_item_ids(thread.id, asked, owner) == {i.id for i in here}
        assert await store.existing_item_ids(thread.id, asked, intruder) == set()
        assert await store.existing_item_ids(their_thread.id, asked, owner) == set()
        assert await store.existing_item_ids(thread.id, [], owner) == set()


class TestSQLiteStore(SQLStoreContract):
    @pytest.fixture
    def database_url(self, sqlite_database_url: str) -> str:
        return sqlite_database_url


@pytest.mark.postgres
class TestPostgresStore(SQLStoreContract):
    @pytest.fixture
    def database_url(self, postgres_database_url: str) -> str:
        return postgres_database_url
