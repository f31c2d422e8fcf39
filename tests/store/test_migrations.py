"""The Alembic migrations build exactly the schema the models describe, on both databases."""

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, select

from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.migrations import VERSION_TABLE, alembic_config, upgrade_to_head
from chatkit_backend.store.tables import ThreadRow, metadata
from tests.support.needs import require_postgres
from tests.support.postgres import fresh_postgres_database, sqlite_url

TABLES = {"threads", "items", "attachments", "feedback"}

T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own for each test, with no tables yet."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    require_postgres()
    with fresh_postgres_database() as url:
        yield url


async def _run(url: str, fn: Callable[[Connection], T]) -> T:
    """Call `fn(sync_connection)` on a short-lived engine and commit."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.run_sync(fn)
            await connection.commit()
            return result
    finally:
        await engine.dispose()


def _schema_diff(url: str) -> list[Any]:
    """Alembic's autogenerate comparison between the database and the models."""

    def compare(connection: Connection) -> list[Any]:
        # The options env.py passes to context.configure.
        context = MigrationContext.configure(
            connection,
            opts={
                "target_metadata": metadata,
                "compare_type": True,
                "render_as_batch": connection.dialect.name == "sqlite",
                "version_table": VERSION_TABLE,
            },
        )
        return list(compare_metadata(context, metadata))

    return asyncio.run(_run(url, compare))


def _table_names(url: str) -> set[str]:
    return asyncio.run(_run(url, lambda c: set(inspect(c).get_table_names())))


def test_upgrade_matches_models(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url)

    assert _table_names(empty_database_url) >= TABLES
    assert _schema_diff(empty_database_url) == []


def test_downgrade_to_base_then_upgrade_again(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "head")

    command.downgrade(config, "base")
    assert _table_names(empty_database_url) == {"chatkit_alembic_version"}
    assert _schema_diff(empty_database_url) != []  # the comparison does see a gap

    command.upgrade(config, "head")
    assert _table_names(empty_database_url) >= TABLES
    assert _schema_diff(empty_database_url) == []


def test_seq_autoincrements(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url)
    threads = ThreadRow.__table__
    now = datetime.now(UTC)

    def insert_two(connection: Connection) -> list[int]:
        for thread_id in ("thr_a", "thr_b"):
            connection.execute(
                insert(threads).values(
                    id=thread_id,
                    tenant_id="t",
                    user_id="u",
                    created_at=now,
                    updated_at=now,
                    data="{}",
                )
            )
        rows = connection.execute(select(threads.c.seq).order_by(threads.c.id))
        return [seq for (seq,) in rows]

    first, second = asyncio.run(_run(empty_database_url, insert_two))
    assert first is not None
    assert second > first


async def test_upgrade_from_running_event_loop(tmp_path: Path) -> None:
    # env.py moves the migration to a worker thread when this thread's loop is busy.
    url = sqlite_url(tmp_path)
    upgrade_to_head(url)

    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        return list(compare_metadata(context, metadata))

    assert await _run(url, diff) == []
