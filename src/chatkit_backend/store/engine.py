"""The async engine for a database URL."""

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

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


async def wait_until_answering(url: str, within_seconds: float) -> bool:
    """Poll the database until it answers `SELECT 1`; False if `within_seconds` pass first."""
    import asyncio
    import time

    from sqlalchemy import text

    deadline = time.monotonic() + within_seconds
    engine = create_engine(url, pool_size=1)
    try:
        while True:
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                return True
            except (OSError, SQLAlchemyError):
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(1)
    finally:
        await engine.dispose()
