"""Run the Alembic migrations from code (the `migrate` command and the tests), and tell
whether a database's schema is the one this code needs (`serve`, /readyz)."""

import ast
import asyncio
import functools
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, column, inspect, select, text
from sqlalchemy import table as table_clause
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from chatkit_backend.settings import Settings, check_table_prefix
from chatkit_backend.store.engine import (
    CONNECT_FAILURES,
    DatabaseUnusable,
    connect_failure,
    open_engine,
)

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

# A clone (or `pip install -e`) keeps alembic.ini and alembic/ beside src/; a wheel
# carries alembic/ inside the package as chatkit_backend/migrations (pyproject.toml).
_PROJECT_ROOT = Path(__file__).resolve().parents[3]
_PACKAGED_MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"

MIGRATE_COMMAND = "chatkit-backend migrate"
# Our own, so an app that includes our routers can keep its own Alembic history in the
# same database: Alembic's default `alembic_version` is the host's. Under TABLE_PREFIX
# it carries the prefix too (`version_table`): each prefix is a schema of its own.
VERSION_TABLE = "chatkit_alembic_version"
# Where env.py and the migration scripts read the TABLE_PREFIX being migrated.
PREFIX_ATTRIBUTE = "table_prefix"
# Where versions before 0.2 kept our revision; `adopt_legacy_version` moves it.
LEGACY_VERSION_TABLE = "alembic_version"
# Told to HTTP clients (and so to whoever reads the web client's error) as it is.
NOT_MIGRATED_MESSAGE = f"The database schema is missing or out of date; run `{MIGRATE_COMMAND}`"


# Alembic is imported only by what migrates: importing it costs a server process
# about 10 MB and a quarter of a second, and serving needs only the revision ids.


def _alembic_ini() -> Path:
    # Beside src/, never the working folder's: run from another project's folder (an app
    # that includes our routers), an alembic.ini found there is that project's.
    return _PROJECT_ROOT / "alembic.ini"


def _ours(scripts: Path) -> bool:
    env = scripts / "env.py"
    return env.is_file() and "chatkit_backend.store" in env.read_text(encoding="utf-8")


def migrations_dir() -> Path:
    """Our Alembic scripts: alembic/ in a clone, else the copy inside the installed
    package, else alembic/ in the working folder (images built before the package
    carried its migrations)."""
    for scripts in (_PROJECT_ROOT / "alembic", _PACKAGED_MIGRATIONS, Path("alembic")):
        if _ours(scripts):
            return scripts
    return _PROJECT_ROOT / "alembic"


def version_table(prefix: str) -> str:
    """Where our revision is kept for the tables under `prefix`."""
    return prefix + VERSION_TABLE


def prefixed(name: str) -> str:
    """For the migration scripts: a table or index name under the TABLE_PREFIX that env.py
    is migrating."""
    from alembic import context

    prefix: str = context.config.attributes.get(PREFIX_ATTRIBUTE) or ""
    return prefix + name


def alembic_config(database_url: str | None = None, table_prefix: str | None = None) -> "Config":
    """The project's Alembic config, pointed at `database_url` and `table_prefix` when
    given (else env.py reads them from the settings)."""
    from alembic.config import Config

    ini = _alembic_ini()
    # alembic.ini only adds logging and the hooks of `alembic revision`: a wheel has none.
    config = Config(str(ini)) if ini.is_file() else Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    if table_prefix is not None:
        config.attributes[PREFIX_ATTRIBUTE] = check_table_prefix(table_prefix)
    return config


def upgrade_to_head(database_url: str | None = None, table_prefix: str | None = None) -> None:
    """Bring the database to the newest schema. Also for an app that includes our
    routers, from its own migrations (its env.py), deploy script or start-up: our history
    is kept in `chatkit_alembic_version` (under `table_prefix`,
    `<prefix>chatkit_alembic_version`), apart from the app's."""
    from alembic import command
    from alembic import context as running

    config = alembic_config(database_url, table_prefix)
    # `config` exists on Alembic's module proxy only while an environment runs: we were
    # called from an app's env.py. Alembic runs one environment per process at a time
    # (ours would tear the app's down as it ends), so ours runs in a process of its own.
    if hasattr(running, "config"):
        if running.is_offline_mode():
            raise RuntimeError(
                f"chatkit-backend's migrations cannot join `--sql` output: run `{MIGRATE_COMMAND}`"
            )
        _upgrade_in_child(database_url, table_prefix)
        return
    command.upgrade(config, "head")


def _upgrade_in_child(database_url: str | None, table_prefix: str | None) -> None:
    """`upgrade_to_head` in a Python process of its own, failing as the child did. The
    URL goes through stdin, never the command line that `ps` shows."""
    script = (
        "import json, sys\n"
        "from chatkit_backend.store.migrations import upgrade_to_head\n"
        "upgrade_to_head(*json.load(sys.stdin))\n"
    )
    given = json.dumps([database_url, table_prefix])
    # Our own interpreter and script, no shell; the values only on stdin.
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], input=given, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"chatkit-backend's migrations failed (exit {done.returncode})")


@dataclass(frozen=True)
class CodeRevisions:
    head: str
    known: frozenset[str]


@functools.cache
def code_revisions() -> CodeRevisions | None:
    """The newest revision this code's migrations reach, and every one they know; read
    from alembic/versions once per process (the `revision` and `down_revision` each
    file assigns, as Alembic reads them). None when the migrations are not found from
    here, or do not end in a single head."""
    parents: dict[str, tuple[str, ...]] = {}
    for path in (migrations_dir() / "versions").glob("*.py"):
        found = _revision_ids(path)
        if found is not None:
            parents[found[0]] = found[1]
    children = {parent for ids in parents.values() for parent in ids}
    heads = [revision for revision in parents if revision not in children]
    if len(heads) != 1:
        return None
    return CodeRevisions(heads[0], frozenset(parents))


def _revision_ids(path: Path) -> tuple[str, tuple[str, ...]] | None:
    """A migration file's `revision` and its `down_revision`s; None for other files."""
    values: dict[str, object] = {}
    targets: list[ast.expr]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                values[target.id] = ast.literal_eval(value)
    revision, down = values.get("revision"), values.get("down_revision")
    if not isinstance(revision, str):
        return None
    if isinstance(down, str):
        return revision, (down,)
    return revision, tuple(str(parent) for parent in down) if isinstance(down, tuple | list) else ()


@dataclass(frozen=True)
class SchemaState:
    """A database's Alembic revision against the code's."""

    revision: str | None  # the database's; None when it has no version row of ours
    code: CodeRevisions | None
    table_prefix: str = ""

    @property
    def behind(self) -> bool:
        """Never migrated, or at a revision older than the code's head."""
        if self.code is None:
            return False  # cannot tell; `unknown` says so
        if self.revision is None:
            return True
        return self.revision != self.code.head and self.revision in self.code.known

    @property
    def ahead(self) -> bool:
        """At a revision this code does not know: a newer version migrated it. Fine while
        an upgrade rolls out, since migrations are additive first."""
        return (
            self.code is not None
            and self.revision is not None
            and self.revision not in self.code.known
        )

    @property
    def unknown(self) -> bool:
        return self.code is None

    def problem(self) -> str | None:
        """What is wrong and the command that cures it, for the log; None when current."""
        if not self.behind:
            return None
        # Migrating without the server's prefix would build the wrong set of tables.
        command = MIGRATE_COMMAND
        if self.table_prefix:
            command = f"TABLE_PREFIX={self.table_prefix} {MIGRATE_COMMAND}"
        if self.revision is None:
            return f"the database has no schema yet: run `{command}`"
        head = self.code.head if self.code else "?"
        return (
            f"the database schema is at revision {self.revision}, this version needs {head}: "
            f"run `{command}`"
        )


def _revision(connection: Connection, prefix: str) -> str | None:
    # What Alembic's MigrationContext.get_current_revision reads, without importing it.
    name = version_table(prefix)
    if inspect(connection).has_table(name):
        query: Select[Any] = select(column("version_num")).select_from(table_clause(name))
        found: str | None = connection.execute(query).scalar()
        return found
    # Migrated before our history had a table of its own (and before prefixes): still
    # our schema, moved by the next `migrate`.
    return None if prefix else _legacy_revision(connection)


def _legacy_revision(connection: Connection) -> str | None:
    """Our revision in `alembic_version`, where versions before 0.2 kept it; None when
    that table is missing, empty or holds someone else's revision."""
    if not inspect(connection).has_table(LEGACY_VERSION_TABLE):
        return None
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    code = code_revisions()
    ours = [row for row in rows if code is not None and row in code.known]
    return ours[0] if len(ours) == 1 else None


def adopt_legacy_version(connection: Connection) -> str | None:
    """Before migrating (env.py): move our revision from `alembic_version` to
    `chatkit_alembic_version`, dropping the old table when nothing else is left in it.
    Returns the revision moved, if any. A host's revisions there are left alone."""
    if inspect(connection).has_table(VERSION_TABLE):
        return None
    revision = _legacy_revision(connection)
    if revision is None:
        return None
    connection.execute(
        text(
            # As Alembic makes it, so its later upgrades find what they expect.
            "CREATE TABLE chatkit_alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT chatkit_alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    connection.execute(
        text("INSERT INTO chatkit_alembic_version (version_num) VALUES (:revision)"),
        {"revision": revision},
    )
    connection.execute(
        text("DELETE FROM alembic_version WHERE version_num = :revision"),
        {"revision": revision},
    )
    left = connection.execute(text("SELECT count(*) FROM alembic_version")).scalar()
    if not left:
        connection.execute(text("DROP TABLE alembic_version"))
    logger.info("moved revision %s from %s to %s", revision, LEGACY_VERSION_TABLE, VERSION_TABLE)
    return revision


async def read_schema_state(conn: AsyncConnection, table_prefix: str = "") -> SchemaState:
    """The schema's state, read on `conn` (checks the table exists, then reads it)."""
    revision = await conn.run_sync(_revision, table_prefix)
    return SchemaState(revision, code_revisions(), table_prefix)


async def schema_state_of(settings: Settings) -> SchemaState:
    """Connect to DATABASE_URL and read its schema's state; DatabaseUnusable, in one
    line, when it cannot be reached or used."""
    try:
        async with open_engine(settings, pool_size=1) as engine, engine.connect() as conn:
            return await read_schema_state(conn, settings.table_prefix)
    except CONNECT_FAILURES as exc:
        raise DatabaseUnusable(connect_failure(exc, settings.database_url)) from None


def ensure_schema_current(settings: Settings) -> None:
    """Before serving (outside any event loop): the database must answer and hold this
    code's schema. One behind is migrated with MIGRATE_ON_START, else DatabaseUnusable
    naming the command."""
    state = asyncio.run(schema_state_of(settings))
    if state.unknown:
        logger.warning(
            "cannot check the database schema: this installation has no migrations "
            "(alembic/ beside src/, or chatkit_backend/migrations)"
        )
    elif state.ahead:
        logger.warning(
            "the database schema is at revision %s, newer than this version knows; "
            "fine while an upgrade rolls out",
            state.revision,
        )
    problem = state.problem()
    if problem is None:
        return
    if not settings.migrate_on_start:
        raise DatabaseUnusable(f"{problem} (or set MIGRATE_ON_START=true)")
    logger.info("MIGRATE_ON_START: bringing the database schema up to date")
    upgrade_to_head(settings.database_url, settings.table_prefix)


class SchemaWatch:
    """The schema's problem for /readyz, read again at most every `interval` seconds:
    probes can come every second, and the schema changes only when someone migrates."""

    def __init__(self, table_prefix: str = "", interval: float = 5.0) -> None:
        self.table_prefix = table_prefix
        self.interval = interval
        self._problem: str | None = None
        self._read_at: float | None = None

    async def problem(self, conn: AsyncConnection) -> str | None:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self.interval:
            problem = (await read_schema_state(conn, self.table_prefix)).problem()
            if problem is not None:
                logger.error("not ready: %s", problem)
            self._problem, self._read_at = problem, now
        return self._problem


async def require_current_schema(settings: Settings) -> None:
    """For the commands that read and write rows: DatabaseUnusable, in one line, when the
    database cannot be reached or its schema is behind."""
    problem = (await schema_state_of(settings)).problem()
    if problem is not None:
        raise DatabaseUnusable(problem)
