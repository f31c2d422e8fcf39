"""Throwaway databases for tests: a SQLite file, or a fresh PostgreSQL database."""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

# The server the suite uses; CI machines run one here before the tests start.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def postgres_reachable() -> bool:
    import asyncio

    import asyncpg

    url = make_url(POSTGRES_ADMIN_URL)

    async def ping() -> None:
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            database=url.database,
            password=url.password,
            timeout=3,
        )
        await conn.close()

    try:
        asyncio.run(ping())
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
    import asyncio

    import asyncpg

    admin = make_url(POSTGRES_ADMIN_URL)
    name = f"chatkit_test_{secrets.token_hex(6)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(
            host=admin.host,
            port=admin.port or 5432,
            user=admin.username,
            database=admin.database,
            password=admin.password,
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'chatkit.db'}"
