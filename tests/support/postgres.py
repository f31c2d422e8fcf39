"""PostgreSQL for tests and the benchmark: throwaway databases on the shared server, the
connections it counts, and throwaway clusters of a test's own. Also SQLite file URLs.

No pytest here (bench/ imports it); `needs.require_postgres` skips or fails a test.
"""

import asyncio
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from tests.support.processes import free_port

# The server the suite uses; CI machines run one here before the tests start.
ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def admin_connection(
    admin_url: str = ADMIN_URL, connect_timeout: float = 3
) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the admin database named by `admin_url` (a SQLAlchemy URL)."""
    url = make_url(admin_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        database=url.database,
        password=url.password,
        timeout=connect_timeout,
    )
    try:
        yield conn
    finally:
        await conn.close()


def admin_sql(sql: str | None, admin_url: str = ADMIN_URL) -> None:
    """Connect to the admin database (and run `sql`), from synchronous code."""

    async def run() -> None:
        async with admin_connection(admin_url) as conn:
            if sql is not None:
                await conn.execute(sql)

    asyncio.run(run())


def postgres_reachable(admin_url: str = ADMIN_URL) -> bool:
    try:
        admin_sql(None, admin_url)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


@contextmanager
def fresh_postgres_database(
    admin_url: str = ADMIN_URL, prefix: str = "chatkit_test"
) -> Iterator[str]:
    """Create an empty database on the admin URL's server, yield its async URL, drop it
    after (`database_name(url)` is its name)."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin_sql(f'CREATE DATABASE "{name}"', admin_url)
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', admin_url)


def database_name(url: str) -> str | None:
    """The PostgreSQL database a URL names; None for any other kind of database."""
    return make_url(url).database if url.startswith("postgresql") else None


async def connections_to(
    conn: asyncpg.Connection, database: str, *, busy_only: bool = False
) -> int:
    """Connections open to `database` right now, as PostgreSQL counts them; with
    `busy_only`, those running a query or inside a transaction (not idle in a pool)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
    if busy_only:
        query += " AND state <> 'idle'"
    found = await conn.fetchval(query, database)
    return int(found)


async def postgres_backends(
    database_url: str, busy_only: bool = False, admin_url: str = ADMIN_URL
) -> int:
    """`connections_to` the database at `database_url`, on a connection of its own."""
    async with admin_connection(admin_url, connect_timeout=5) as conn:
        return await connections_to(
            conn, make_url(database_url).database or "", busy_only=busy_only
        )


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'chatkit.db'}"


# ---- a PostgreSQL cluster of a test's own ----


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (initdb, pg_ctl), if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


class ThrowawayPostgres:
    """initdb + pg_ctl in a temporary directory, on a free port, trust auth; a test can
    stop and start it without touching the shared server.

    PostgreSQL refuses to run as root; as root (CI) the cluster belongs to `postgres`.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        # /tmp, not pytest's tmp_path: that is private to root, and `postgres` must enter.
        self.root = Path(tempfile.mkdtemp(prefix="chatkit-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / tool), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def answers(self) -> bool:
        async def probe() -> None:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="postgres", database="postgres", timeout=2
            )
            await conn.close()

        try:
            asyncio.run(probe())
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        return True

    def remove(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def throwaway_postgres(bin_dir: Path) -> Iterator[ThrowawayPostgres]:
    """A started cluster of its own (`server_binaries()` names `bin_dir`); removed after."""
    cluster = ThrowawayPostgres(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@contextmanager
def empty_database(kind: str, folder: Path) -> Iterator[str]:
    """A database of its own with no tables: a SQLite file in `folder` ("sqlite"), or a
    fresh database on the shared PostgreSQL server ("postgresql"), dropped after."""
    if kind == "sqlite":
        yield sqlite_url(folder)
        return
    with fresh_postgres_database() as url:
        yield url
