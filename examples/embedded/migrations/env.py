"""The host's Alembic environment: its own metadata, Alembic's default version table.
When it brings its tables to head, it brings chatkit-backend's there too: one
`alembic upgrade head` migrates both."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alembic import context
from host.models import CHATKIT_TABLE_PREFIX, Base
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from chatkit_backend.store.migrations import upgrade_to_head

target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    # The database also holds chatkit-backend's tables: autogenerate must not drop them.
    return type_ != "table" or name in target_metadata.tables


def database_url() -> str:
    url: str | None = context.config.attributes.get("database_url")
    return url or os.environ["DATABASE_URL"]


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    engine = create_async_engine(database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run)
            await connection.commit()
    finally:
        await engine.dispose()


try:
    asyncio.get_running_loop()
except RuntimeError:
    asyncio.run(run_async())
else:
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run_async()).result()

# chatkit-backend's tables follow ours up (not down): its history is its own.
if context.get_revision_argument() == context.get_head_revision():
    upgrade_to_head(database_url(), table_prefix=CHATKIT_TABLE_PREFIX)
