"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command, context
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, insert, select

from chatkit_backend.store.migrations import alembic_config, upgrade_to_head
from chatkit_backend.store.tables import ThreadRow
from tests.support.postgres import sqlite_url
from tests.support.schema import run_on, run_on_async, schema_diff, schema_diff_on, table_names

TABLES = {"threads", "items", "attachments", "feedback"}


def test_upgrade_matches_models(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url)

    assert table_names(empty_database_url) >= TABLES
    assert schema_diff(empty_database_url) == []


def test_downgrade_to_base_then_upgrade_again(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "head")

    command.downgrade(config, "base")
    assert table_names(empty_database_url) == {"chatkit_alembic_version"}
    assert schema_diff(empty_database_url) != []  # the comparison does see a gap

    command.upgrade(config, "head")
    assert table_names(empty_database_url) >= TABLES
    assert schema_diff(empty_database_url) == []


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

    first, second = run_on(empty_database_url, insert_two)
    assert first is not None
    assert second > first


async def test_upgrade_from_running_event_loop(tmp_path: Path) -> None:
    # env.py moves the migration to a worker thread when this thread's loop is busy.
    url = sqlite_url(tmp_path)
    upgrade_to_head(url)

    assert await run_on_async(url, schema_diff_on) == []


def test_from_an_apps_running_alembic_environment(empty_database_url: str) -> None:
    # As an app's env.py calls it: Alembic runs one environment per process at a time,
    # and ours, run inside, would tear the app's down (a KeyError as the app's ends).
    config = alembic_config(empty_database_url)
    scripts = ScriptDirectory.from_config(config)
    with EnvironmentContext(config, scripts):
        upgrade_to_head(empty_database_url)
        assert context.config is config  # the app's environment is still in place
    assert schema_diff(empty_database_url) == []

    # `alembic upgrade head --sql` prints SQL: ours must not migrate for real then.
    with (
        EnvironmentContext(config, scripts, as_sql=True),
        pytest.raises(RuntimeError, match="--sql"),
    ):
        upgrade_to_head(empty_database_url)
