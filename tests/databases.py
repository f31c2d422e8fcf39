"""Throwaway databases for tests: a SQLite file, or a fresh PostgreSQL database."""

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

# The server the suite uses; CI machines run one here before the tests start.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def _admin_sql(sql: str | None) -> None:
    """Connect to the admin database (and run `sql`), from synchronous code."""
    url = make_url(POSTGRES_ADMIN_URL)

    async def run() -> None:
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            database=url.database,
            password=url.password,
            timeout=3,
        )
        try:
            if sql is not None:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def postgres_reachable() -> bool:
    try:
        _admin_sql(None)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


def require_postgres() -> None:
    """Skip when PostgreSQL is down, except under CI, where a skip would hide a gap."""
    if postgres_reachable():
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} (CI needs it)")
    pytest.skip("PostgreSQL is not reachable; these cases run under CI")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty database on the test server, yield its async URL, drop it after."""
    name = f"chatkit_test_{secrets.token_hex(6)}"
    _admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'chatkit.db'}"
