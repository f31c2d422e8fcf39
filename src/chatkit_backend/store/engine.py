"""The database engine: made from DATABASE_URL here and nowhere else, and which of its
failures mean "the database is away"."""

import asyncio
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
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


async def wait_until_answering(settings: Settings, within_seconds: float) -> str | None:
    """Poll the database until it answers `SELECT 1`: None once it does, else (when
    `within_seconds` pass first) what the last attempt ran into, in one line."""
    deadline = time.monotonic() + within_seconds
    try:
        async with open_engine(settings, pool_size=1) as engine:
            while True:
                try:
                    async with engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
                    return None
                except CONNECT_FAILURES:
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(1)
    except CONNECT_FAILURES as exc:  # the last attempt's, or making the engine failed
        return connect_failure(exc, settings.database_url)


class DatabaseUnusable(Exception):
    """The database cannot be used as configured. The message is one line, names what
    to do, and shows the URL only without its password: commands print it as it is."""


# What connecting can raise when the URL points somewhere wrong: OSError (refused,
# unknown host, timeout, an SQLite folder that cannot be made), SQLAlchemy's wrappers
# of the driver's errors (no such database, wrong password, a file that isn't SQLite),
# TypeError/ValueError (URL options the driver does not take).
CONNECT_FAILURES: tuple[type[Exception], ...] = (OSError, SQLAlchemyError, TypeError, ValueError)

# PostgreSQL's codes for a database that does not exist and for refused credentials.
_NO_SUCH_DATABASE = "3D000"
_REFUSED_LOGIN = frozenset({"28P01", "28000"})


def shown_url(url: str) -> str:
    """The URL as messages show it: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "DATABASE_URL"


def connect_failure(exc: BaseException, url: str) -> str:
    """One line saying why connecting to `url` failed, without its password."""
    where = shown_url(url)
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if url.startswith("sqlite") and isinstance(original, OSError | sqlite3.Error):
        reason = original.strerror if isinstance(original, OSError) else str(original)
        return f"cannot open the SQLite database at {where} ({reason}): can its folder be written?"
    code = getattr(original, "sqlstate", None)
    if code == _NO_SUCH_DATABASE:
        return f"the database named in DATABASE_URL ({where}) does not exist: create it first"
    if code in _REFUSED_LOGIN:
        return f"the database at {where} refused the user name or password in DATABASE_URL"
    if isinstance(original, TimeoutError):
        return f"the database at {where} did not answer within {CONNECT_TIMEOUT_SECONDS} s"
    if isinstance(original, socket.gaierror):
        return f"the host in DATABASE_URL ({where}) is unknown: {original.strerror}"
    if isinstance(original, OSError):
        reason = original.strerror or str(original)
        return f"cannot reach the database at {where} ({reason}): is it running there?"
    # The driver's own words, on one line, without the password should it quote it.
    reason = " ".join(str(original).split()) or type(original).__name__
    password = make_url(url).password if where != "DATABASE_URL" else None
    if password:
        reason = reason.replace(str(password), "***")
    return f"cannot use the database at {where}: {reason}"


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
    if is_schema_missing(exc):
        return False  # SQLite says "no such table" with an OperationalError too
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


# PostgreSQL's codes for a table or a column that does not exist; SQLite's messages.
_UNDEFINED_SQLSTATES = frozenset({"42P01", "42703"})
_SQLITE_UNDEFINED = ("no such table", "no such column")


def is_schema_missing(exc: BaseException) -> bool:
    """True when a statement met a table or column the schema lacks: a database that was
    never migrated, or not since this version's migrations."""
    if not isinstance(exc, DBAPIError):
        return False
    original = exc.orig
    if getattr(original, "sqlstate", None) in _UNDEFINED_SQLSTATES:
        return True
    if not isinstance(original, sqlite3.OperationalError):
        return False
    message = str(original)
    return message.startswith(_SQLITE_UNDEFINED) or "has no column named" in message
