"""Alembic environment: async engine, the app's URL and the app's table metadata."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import String
from sqlalchemy.engine import Connection, make_url
from sqlmodel.sql.sqltypes import AutoString

from chatkit_backend.settings import Settings, table_prefix_setting
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.migrations import (
    PREFIX_ATTRIBUTE,
    adopt_legacy_version,
    version_table,
)
from chatkit_backend.store.tables import tables_for

config = context.config

# Configure logging from alembic.ini only when nobody else has (the alembic CLI);
# the app and pytest keep their own handlers.
if config.config_file_name is not None and not logging.getLogger().handlers:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The URL the app passed in, else the one the settings name."""
    url: str | None = config.attributes.get("database_url")
    return url or Settings().database_url


def table_prefix() -> str:
    """The TABLE_PREFIX the app passed in, else the settings'; kept in the config's
    attributes, where the migration scripts read it (`prefixed`)."""
    prefix: str | None = config.attributes.get(PREFIX_ATTRIBUTE)
    if prefix is None:
        prefix = config.attributes[PREFIX_ATTRIBUTE] = table_prefix_setting()
    return prefix


# Our tables under the prefix being migrated: what autogenerate and the tests compare.
target_metadata = tables_for(table_prefix()).metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render SQLModel's AutoString as a plain String, so revisions don't import sqlmodel."""
    if type_ == "type" and isinstance(obj, AutoString):
        length = obj.impl.length if isinstance(obj.impl, String) else None
        return f"sa.String(length={length})" if length else "sa.String()"
    return False


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate compares our tables only: the database may also hold the tables of
    an app that includes our routers, which are not ours to drop."""
    return type_ != "table" or name in target_metadata.tables


def configure_options(url: str) -> dict[str, Any]:
    """Options shared by online, offline and the tests' schema comparison."""
    return {
        "target_metadata": target_metadata,
        # Apart from `alembic_version`, which an app sharing the database keeps for its own.
        "version_table": version_table(table_prefix()),
        "include_name": include_name,
        "compare_type": True,
        # SQLite can't ALTER most things; batch mode rebuilds the table instead.
        "render_as_batch": make_url(url).get_backend_name() == "sqlite",
        "render_item": render_item,
    }


def run_migrations_offline() -> None:
    """Emit the migration SQL to stdout (`alembic upgrade head --sql`)."""
    url = database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **configure_options(url),
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection, url: str) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # A batch rebuild drops and recreates tables; with foreign keys on, dropping a
        # parent would cascade-delete its children. (Not settable inside a transaction.)
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    context.configure(connection=connection, **configure_options(url))
    with context.begin_transaction():
        # Databases migrated before our history had its own table keep it in alembic_version.
        if not table_prefix():
            adopt_legacy_version(connection)
        context.run_migrations()
    if sqlite:
        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise RuntimeError(f"migration left foreign key violations: {violations[:10]}")


async def run_async_migrations() -> None:
    url = database_url()
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations, url)
            await connection.commit()
    finally:
        await engine.dispose()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_migrations_online() -> None:
    # Outside the `except` above: a failure to connect must not arrive chained to an
    # unrelated "no running event loop".
    if not _loop_running():
        asyncio.run(run_async_migrations())
        return
    # Called from async code: this thread's loop is busy, so use a fresh one elsewhere.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as pool:
        pool.submit(asyncio.run, run_async_migrations()).result()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
