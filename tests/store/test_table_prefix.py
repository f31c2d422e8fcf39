"""TABLE_PREFIX: our tables, indexes and version table under a prefix, beside an app's
own tables of the same plain names; the store, the server and the commands on them.

The prefixed databases here hold no unprefixed tables of ours, so any query still built
on the plain names fails."""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlalchemy import Connection, Dialect, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import Field, SQLModel

from chatkit_backend.settings import Settings
from chatkit_backend.store.migrations import alembic_config, upgrade_to_head, version_table
from chatkit_backend.store.tables import UNPREFIXED, Tables, table_of, tables_for
from tests.store.test_sql_store import SQLStoreContract
from tests.support.needs import require_postgres
from tests.support.postgres import empty_database, sqlite_url
from tests.support.processes import run_cli, serving
from tests.support.schema import run_on, schema_diff, table_names
from tests.support.sse import user_input

PREFIX = "ck_"
OURS = {table.name for table in UNPREFIXED.metadata.sorted_tables}


def _prefixed_names() -> set[str]:
    return {PREFIX + name for name in OURS} | {version_table(PREFIX)}


def _index_names(connection: Connection) -> dict[str, list[str]]:
    found = inspect(connection)
    return {
        table: [index["name"] or "" for index in found.get_indexes(table)]
        for table in found.get_table_names()
    }


def test_prefixed_migrations_build_the_prefixed_tables(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url, PREFIX)

    assert table_names(empty_database_url) == _prefixed_names()
    assert schema_diff(empty_database_url, PREFIX) == []
    # Index names are per schema, not per table: they carry the prefix too.
    indexes = run_on(empty_database_url, _index_names)
    assert all(name.startswith(PREFIX) for names in indexes.values() for name in names)
    assert sum(len(names) for names in indexes.values()) >= 6


def test_beside_an_apps_own_tables_of_the_same_names(empty_database_url: str) -> None:
    def host_tables(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE items (sku VARCHAR(20) PRIMARY KEY)"))
        connection.execute(text("CREATE TABLE usage (day DATE, calls INTEGER)"))
        connection.execute(text("CREATE INDEX ix_items_owner ON items (sku)"))
        connection.execute(text("INSERT INTO items (sku) VALUES ('A-1')"))

    run_on(empty_database_url, host_tables)
    upgrade_to_head(empty_database_url, PREFIX)

    assert table_names(empty_database_url) == _prefixed_names() | {"items", "usage"}
    assert schema_diff(empty_database_url, PREFIX) == []
    skus = run_on(empty_database_url, lambda c: c.execute(text("SELECT sku FROM items")).all())
    assert [tuple(row) for row in skus] == [("A-1",)]

    # Down to nothing again: the app's tables stay as they were.
    command.downgrade(alembic_config(empty_database_url, PREFIX), "base")
    assert table_names(empty_database_url) == {"items", "usage", version_table(PREFIX)}


def test_plain_and_prefixed_schemas_keep_their_own_histories(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url)
    upgrade_to_head(empty_database_url, PREFIX)
    assert table_names(empty_database_url) == OURS | {version_table("")} | _prefixed_names()

    command.downgrade(alembic_config(empty_database_url, PREFIX), "base")

    assert table_names(empty_database_url) == OURS | {version_table(""), version_table(PREFIX)}
    assert schema_diff(empty_database_url) == []


def test_the_prefix_is_checked_before_it_reaches_sql() -> None:
    bad_prefixes = ("Chat_", "1chat", "chat-", "chat prefix", 'x"; DROP TABLE threads; --')
    for bad in (*bad_prefixes, "a" * 31, "sqlite_"):  # SQLite keeps sqlite_ for itself
        with pytest.raises(ValueError, match="TABLE_PREFIX"):
            Settings(_env_file=None, table_prefix=bad)
        with pytest.raises(ValueError, match="TABLE_PREFIX"):
            upgrade_to_head("sqlite+aiosqlite:///unused.db", table_prefix=bad)
        with pytest.raises(ValueError, match="TABLE_PREFIX"):
            tables_for(bad)
    assert Settings(_env_file=None, table_prefix="chatkit_").table_prefix == "chatkit_"


def _ddl(tables: Tables, dialect: Dialect) -> list[str]:
    """Each table's CREATE TABLE and CREATE INDEX statements, the prefix taken out, in
    a stable order."""
    statements = []
    for table in tables.metadata.sorted_tables:
        lines = [*str(CreateTable(table).compile(dialect=dialect)).splitlines()]
        lines += [str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes]
        text = "\n".join(sorted(line.strip().rstrip(",") for line in lines))
        statements.append(re.sub(rf"\b{tables.prefix}", "", text) if tables.prefix else text)
    return sorted(statements)


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["pg", "sqlite"])
def test_prefixed_tables_are_the_declared_ones_renamed(dialect: Dialect) -> None:
    # Guards the copy in tables.py: a column option, constraint or index it did not carry
    # over would show here.
    assert _ddl(tables_for(PREFIX), dialect) == _ddl(UNPREFIXED, dialect)
    assert {table.name for table in tables_for(PREFIX).metadata.sorted_tables} == {
        PREFIX + name for name in OURS
    }


def test_an_apps_sqlmodel_tables_of_the_same_names_stay_apart() -> None:
    # SQLModel's shared metadata is the app's: ours keep metadata of their own.
    class AppUsageRow(SQLModel, table=True):
        __tablename__ = "usage"
        day: str = Field(primary_key=True)

    assert SQLModel.metadata.tables["usage"] is table_of(AppUsageRow)
    assert UNPREFIXED.usage is not table_of(AppUsageRow)
    assert tables_for("other_").metadata.tables.keys() == {"other_" + name for name in OURS}


def test_migrations_read_table_prefix_alone_from_the_environment(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a host's deploy script calls it: no server settings, some of which production
    # would refuse (ENV=production without AUTH_MODE=jwt); only TABLE_PREFIX matters.
    monkeypatch.setenv("ENV", "production")
    monkeypatch.setenv("TABLE_PREFIX", PREFIX)

    upgrade_to_head(empty_database_url)

    assert table_names(empty_database_url) == _prefixed_names()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def prefixed_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "postgresql":
        require_postgres()
    with empty_database(request.param, tmp_path_factory.mktemp("prefixed")) as url:
        upgrade_to_head(url, PREFIX)
        yield url


class TestPrefixedStore(SQLStoreContract):
    """The whole store contract on tables under a prefix, on both databases."""

    @pytest.fixture
    def database_url(self, prefixed_database_url: str) -> str:
        return prefixed_database_url

    @pytest.fixture
    def tables(self) -> Tables:
        return tables_for(PREFIX)


@pytest.mark.slow
def test_served_and_operated_under_a_prefix(tmp_path: Path) -> None:
    """`migrate`, `serve` (a streamed turn, /readyz), `seed-demo`, `stats`, `export`,
    `purge` and `cleanup` with TABLE_PREFIX, on a database holding nothing else."""
    env = {
        "DATABASE_URL": sqlite_url(tmp_path),
        "TABLE_PREFIX": PREFIX,
        "ATTACHMENTS_DIR": str(tmp_path / "attachments"),
        "LLM_PROVIDER": "offline",
        "OFFLINE_TOKEN_DELAY_MS": "0",
    }
    unmigrated = run_cli("serve", env=env, timeout=60)
    assert unmigrated.returncode == 2
    assert f"TABLE_PREFIX={PREFIX} chatkit-backend migrate" in unmigrated.stderr

    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert table_names(env["DATABASE_URL"]) == _prefixed_names()

    with serving(env) as server:
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
        body = {"type": "threads.create", "params": {"input": user_input("hello there")}}
        answer = httpx.post(f"{server.base_url}/chatkit", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert "thread.item.done" in answer.text
        listed = httpx.post(
            f"{server.base_url}/chatkit", json={"type": "threads.list", "params": {}}, timeout=30
        )
        [thread] = listed.json()["data"]
        answered = time.monotonic()

    seeded = run_cli("seed-demo", env=env)
    assert seeded.returncode == 0, seeded.stderr
    stats = run_cli("stats", "--format", "json", env=env)
    assert stats.returncode == 0, stats.stderr
    [tenant] = json.loads(stats.stdout)
    assert (tenant["threads"], tenant["items"]) == (1, 2)

    exported = run_cli("export", thread["id"], env=env)
    assert exported.returncode == 0, exported.stderr
    assert "hello there" in exported.stdout

    cleaned = run_cli("cleanup", env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    time.sleep(max(0.0, 1.5 - (time.monotonic() - answered)))  # past the 1 s cut-off
    purged = run_cli("purge", "--older-than", "1s", env=env)
    assert purged.returncode == 0, purged.stderr

    def counts(connection: Connection) -> tuple[int, int]:
        threads = connection.execute(text(f"SELECT count(*) FROM {PREFIX}threads")).scalar()
        staff = connection.execute(text(f"SELECT count(*) FROM {PREFIX}employees")).scalar()
        return int(threads or 0), int(staff or 0)

    assert run_on(env["DATABASE_URL"], counts)[0] == 0
    assert run_on(env["DATABASE_URL"], counts)[1] > 0
