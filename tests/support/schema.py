"""Looking at a database's schema from tests: run code on a sync connection, list the
tables, and compare with our metadata as Alembic's autogenerate would."""

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.migrations import version_table
from chatkit_backend.store.tables import tables_for

T = TypeVar("T")


async def run_on_async(url: str, fn: Callable[[Connection], T]) -> T:
    """Call `fn(sync_connection)` on a short-lived engine, then commit."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.run_sync(fn)
            await connection.commit()
            return result
    finally:
        await engine.dispose()


def run_on(url: str, fn: Callable[[Connection], T]) -> T:
    """`run_on_async` from synchronous code."""
    return asyncio.run(run_on_async(url, fn))


def table_names(url: str) -> set[str]:
    return run_on(url, lambda connection: set(inspect(connection).get_table_names()))


def schema_diff_on(connection: Connection, prefix: str = "") -> list[Any]:
    """Alembic's autogenerate comparison between the database and our tables under
    `prefix`, with the options env.py passes to context.configure."""
    metadata = tables_for(prefix).metadata
    context = MigrationContext.configure(
        connection,
        opts={
            "target_metadata": metadata,
            "compare_type": True,
            "render_as_batch": connection.dialect.name == "sqlite",
            "version_table": version_table(prefix),
            # Only ours: the database may hold other tables (a host's, another prefix's).
            "include_name": lambda name, type_, parents: (
                type_ != "table" or name in metadata.tables
            ),
        },
    )
    return list(compare_metadata(context, metadata))


def schema_diff(url: str, prefix: str = "") -> list[Any]:
    return run_on(url, lambda connection: schema_diff_on(connection, prefix))
