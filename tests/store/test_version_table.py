"""Our Alembic history lives in chatkit_alembic_version, apart from an app's own
alembic_version; databases migrated before keep working and are moved on `migrate`."""

import asyncio

import pytest
from sqlalchemy import Connection, inspect, text

from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.migrations import (
    LEGACY_VERSION_TABLE,
    VERSION_TABLE,
    code_revisions,
    read_schema_state,
    upgrade_to_head,
)
from tests.support.schema import run_on


@pytest.fixture
def migrated_url(empty_database_url: str) -> str:
    upgrade_to_head(empty_database_url)
    return empty_database_url


def _head() -> str:
    code = code_revisions()
    assert code is not None
    return code.head


def _as_before(connection: Connection, *others: str) -> None:
    """The database as versions before 0.2 left it: our revision in alembic_version,
    beside `others` (an app's own revisions)."""
    connection.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    connection.execute(text(f"CREATE TABLE {LEGACY_VERSION_TABLE} (version_num VARCHAR(32))"))
    for revision in (_head(), *others):
        connection.execute(text(f"INSERT INTO {LEGACY_VERSION_TABLE} VALUES (:r)"), {"r": revision})


def _versions(connection: Connection, table: str) -> list[str] | None:
    if not inspect(connection).has_table(table):
        return None
    return sorted(connection.execute(text(f"SELECT version_num FROM {table}")).scalars())


def test_a_fresh_database_keeps_our_history_in_our_table(migrated_url: str) -> None:
    assert run_on(migrated_url, lambda c: _versions(c, VERSION_TABLE)) == [_head()]
    assert run_on(migrated_url, lambda c: _versions(c, LEGACY_VERSION_TABLE)) is None


@pytest.mark.parametrize("others", [(), ("host0001",)], ids=["alone", "beside-a-host"])
def test_a_database_migrated_before_is_current_and_moved_on_migrate(
    migrated_url: str, others: tuple[str, ...]
) -> None:
    run_on(migrated_url, lambda c: _as_before(c, *others))

    # serve's start-up check and /readyz: the schema is current, nothing to do yet.
    async def state() -> str | None:
        engine = create_engine(migrated_url)
        try:
            async with engine.connect() as conn:
                found = await read_schema_state(conn)
                assert not found.behind
                return found.revision
        finally:
            await engine.dispose()

    assert asyncio.run(state()) == _head()

    upgrade_to_head(migrated_url)
    assert run_on(migrated_url, lambda c: _versions(c, VERSION_TABLE)) == [_head()]
    # The host's revision stays where its Alembic looks; an emptied table goes.
    left = run_on(migrated_url, lambda c: _versions(c, LEGACY_VERSION_TABLE))
    assert left == (sorted(others) if others else None)


def test_a_hosts_alembic_version_alone_is_not_taken_for_ours(migrated_url: str) -> None:
    def host_only(connection: Connection) -> None:
        _as_before(connection, "host0001")
        connection.execute(
            text(f"DELETE FROM {LEGACY_VERSION_TABLE} WHERE version_num = :r"), {"r": _head()}
        )

    run_on(migrated_url, host_only)

    async def revision() -> str | None:
        engine = create_engine(migrated_url)
        try:
            async with engine.connect() as conn:
                return (await read_schema_state(conn)).revision
        finally:
            await engine.dispose()

    assert asyncio.run(revision()) is None
