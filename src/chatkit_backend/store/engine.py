"""The database engine: made from DATABASE_URL here and nowhere else, and which of its
failures mean "the database is away"."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from chatkit_backend.settings import Settings

CONNECT_TIMEOUT_SECONDS = 5
# Waiting for a free pooled connection; beyond it the request fails with 503.
POOL_TIMEOUT_SECONDS = 10


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers work while one writer commits; NORMAL is durable in WAL mode
    # across application crashes, which is what a chat server needs.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """Build the engine; SQLite gets WAL and foreign keys, PostgreSQL a bounded pool."""
    if make_url(url).get_backend_name() == "sqlite":
        _ensure_sqlite_dir(url)
        # No pre-ping: a connection to a local file cannot go stale, and the ping cost a
        # round trip to aiosqlite's thread on every checkout (a third of a short query).
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No overflow: the pool size is a hard ceiling on connections per process.
    # Connecting gives up after CONNECT_TIMEOUT_SECONDS (asyncpg waits 60 s), so a
    # database that is away fails requests quickly instead of piling them up.
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
    )


def _ensure_sqlite_dir(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def engine_for(settings: Settings, pool_size: int | None = None) -> AsyncEngine:
    """The engine DATABASE_URL names: the one place that setting becomes connections."""
    return create_engine(settings.database_url, pool_size or settings.database_pool_size)


@asynccontextmanager
async def open_engine(settings: Settings, pool_size: int = 2) -> AsyncIterator[AsyncEngine]:
    """A small engine for one command (migrate, cleanup, reports), disposed at the end."""
    engine = engine_for(settings, pool_size)
    try:
        yield engine
    finally:
        await engine.dispose()


async def wait_until_answering(settings: Settings, within_seconds: float) -> bool:
    """Poll the database until it answers `SELECT 1`; False if `within_seconds` pass first."""
    deadline = time.monotonic() + within_seconds
    async with open_engine(settings, pool_size=1) as engine:
        while True:
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                return True
            except (OSError, SQLAlchemyError):
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(1)


# Refused or dropped connections surface as OSError (asyncpg connecting), as
# OperationalError/InterfaceError (a connection that died), or as the pool's timeout.
DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ConnectionError,
)


def is_database_outage(exc: BaseException) -> bool:
    """True for failures that a database coming back would cure."""
    if isinstance(exc, DATABASE_OUTAGES):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # asyncpg's own errors for a server that is shutting down or restarting, raw or
    # wrapped by SQLAlchemy.
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    return type(original).__name__ in _ASYNCPG_OUTAGES


_ASYNCPG_OUTAGES = frozenset(
    {"CannotConnectNowError", "AdminShutdownError", "ConnectionDoesNotExistError"}
)
