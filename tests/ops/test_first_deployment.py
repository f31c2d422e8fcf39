"""First-deployment mistakes, as a new user makes them: a database that was never
migrated, a DATABASE_URL that is wrong or spelled the common way, LOG_LEVEL in lower
case. Each is one line that names the cure (exit code 2), or a 503 JSON answer that
does, never a traceback, never the password."""

import asyncio
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from chatkit_backend.settings import Settings
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.migrations import alembic_config, code_revisions, upgrade_to_head
from tests.support.chat_client import assert_envelope, local_app, post
from tests.support.needs import require_postgres
from tests.support.ops import body
from tests.support.postgres import ADMIN_URL, sqlite_url
from tests.support.processes import free_port, run_cli, serving
from tests.support.sse import user_input

PASSWORD = "s3cret-Pa55word"
MIGRATE = "chatkit-backend migrate"


def _env(database_url: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "LLM_PROVIDER": "offline", **extra}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`chatkit-backend ARGS`; one that should refuse at once but serves instead is
    stopped after a minute (and then fails the test)."""
    try:
        return run_cli(*args, env=env, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(args)}` still ran after 60 s: {exc.stderr!r:.2000}")


def _assert_refused_in_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert PASSWORD not in output
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# ---- DATABASE_URL and LOG_LEVEL as people write them ----


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db:5432/chat", "postgresql+asyncpg://u:p@db:5432/chat"),
        ("postgres://u:p@db/chat", "postgresql+asyncpg://u:p@db/chat"),
        ("postgresql+asyncpg://u:p@db/chat", "postgresql+asyncpg://u:p@db/chat"),
        ("sqlite:///./data/chat.db", "sqlite+aiosqlite:///./data/chat.db"),
        ("sqlite:////var/lib/chat.db", "sqlite+aiosqlite:////var/lib/chat.db"),
        ("sqlite+aiosqlite:///chat.db", "sqlite+aiosqlite:///chat.db"),
        # libpq's sslmode, in most hosted databases' URLs, is asyncpg's ssl.
        (
            "postgres://u:p%40ss@db/chat?sslmode=require",
            "postgresql+asyncpg://u:p%40ss@db/chat?ssl=require",
        ),
    ],
)
def test_the_common_database_url_spellings_map_to_the_async_drivers(given: str, used: str) -> None:
    settings = Settings(_env_file=None, database_url=given)
    assert settings.database_url == used
    assert settings.is_sqlite == used.startswith("sqlite")


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("notaurl", "not a database URL"),
        (f"mysql://u:{PASSWORD}@db/chat", "does not support"),
        (f"postgresql+psycopg2://u:{PASSWORD}@db/chat", "does not support"),
        (f"postgresql://u:{PASSWORD}@db:port/chat", "not a valid URL"),
    ],
)
def test_an_unusable_database_url_is_named_with_the_shape_to_use(given: str, reason: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, database_url=given)
    (error,) = refused.value.errors(include_input=False, include_url=False)
    assert reason in error["msg"] and "DATABASE_URL" in error["msg"]
    assert "postgresql://user:password@host:5432/database" in error["msg"]
    assert PASSWORD not in error["msg"]


@pytest.mark.parametrize("given", ["warning", "Warning", "WARNING", "debug", " info "])
def test_log_level_is_taken_in_any_case(given: str) -> None:
    settings = Settings(_env_file=None, log_level=given)
    assert settings.log_level == given.strip().upper()


def test_an_unknown_log_level_is_still_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, log_level="loud")


def test_the_code_head_is_the_one_alembic_finds() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    revisions = code_revisions()
    assert revisions is not None
    assert revisions.head == scripts.get_current_head()
    assert revisions.known == {script.revision for script in scripts.walk_revisions()}


# ---- a wrong DATABASE_URL, from real processes ----


def _closed_port_url() -> str:
    # The plain postgresql:// spelling: once it asked for psycopg in a long traceback.
    return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/chatkit"


def _missing_database_url() -> str:
    require_postgres()
    missing = make_url(ADMIN_URL).set(database=f"chatkit_missing_{secrets.token_hex(4)}")
    # The test server trusts everyone: a password is only there to be hidden.
    return missing.set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.mark.slow
@pytest.mark.parametrize("command_name", ["migrate", "serve", "stats"])
@pytest.mark.parametrize(
    ("url_for", "words"),
    [
        pytest.param(
            _closed_port_url, ["cannot reach", "postgres:***@127.0.0.1"], id="closed-port"
        ),
        pytest.param(
            _missing_database_url, ["does not exist", "chatkit_missing_"], id="no-database"
        ),
        pytest.param(lambda: "notaurl", ["is not a database URL", "postgresql://"], id="notaurl"),
        pytest.param(
            lambda: f"mysql://root:{PASSWORD}@db/x", ["not support", "sqlite:///"], id="mysql"
        ),
        # /dev/null is no folder (and root may write anywhere else).
        pytest.param(
            lambda: "sqlite:////dev/null/chatkit.db",
            ["cannot open the SQLite", "/dev/null"],
            id="sqlite",
        ),
    ],
)
def test_a_wrong_database_url_is_one_line_and_exit_code_2(
    command_name: str, url_for: Callable[[], str], words: list[str]
) -> None:
    url = url_for()
    args = [command_name, "--port", str(free_port())] if command_name == "serve" else [command_name]
    _assert_refused_in_one_line(_cli(*args, env=_env(url)), *words)


@pytest.mark.slow
def test_migrate_waits_then_says_why_it_gave_up() -> None:
    result = _cli("migrate", "--wait", "1", env=_env(_closed_port_url()))
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "did not answer within" in result.stderr and "cannot reach" in result.stderr
    assert "Traceback" not in output and PASSWORD not in output


@pytest.mark.slow
def test_migrate_and_serve_take_a_plain_sqlite_url(tmp_path: Path) -> None:
    env = _env(f"sqlite:///{tmp_path / 'plain.db'}")
    migrated = _cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    with serving(env) as server:
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200


# ---- a database that was never migrated ----


@pytest.mark.slow
@pytest.mark.parametrize("command_name", ["serve", "stats"])
def test_commands_refuse_a_database_that_was_never_migrated(
    command_name: str, empty_database_url: str
) -> None:
    args = [command_name, "--port", str(free_port())] if command_name == "serve" else [command_name]
    result = _cli(*args, env=_env(empty_database_url))
    _assert_refused_in_one_line(result, "no schema", MIGRATE)
    if command_name == "serve":
        assert "MIGRATE_ON_START=true" in result.stderr


@pytest.mark.slow
def test_serve_refuses_a_schema_behind_the_code(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    command.upgrade(alembic_config(url), "0001")
    result = _cli("serve", "--port", str(free_port()), env=_env(url))
    _assert_refused_in_one_line(result, "at revision 0001", MIGRATE)


@pytest.mark.slow
def test_migrate_on_start_brings_the_schema_up_then_serves(empty_database_url: str) -> None:
    with serving(_env(empty_database_url, MIGRATE_ON_START="true")) as server:
        assert httpx.get(f"{server.base_url}/readyz").json() == {"status": "ready"}
        assert post(server.base_url, "threads.list").status_code == 200


@pytest.mark.slow
def test_a_schema_newer_than_the_code_is_served_as_during_a_rolling_upgrade(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    upgrade_to_head(url)
    asyncio.run(_set_revision(url, "f00dcafe"))
    with serving(_env(url)) as server:
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200
        assert "newer than this version knows" in server.log()


async def _set_revision(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE chatkit_alembic_version SET version_num = :r"), {"r": revision}
            )
    finally:
        await engine.dispose()


async def test_an_app_on_an_unmigrated_database_is_not_ready_and_says_migrate(
    empty_database_url: str,
) -> None:
    async with local_app(empty_database_url) as (_, http):
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert_envelope(ready, 503, "database_not_migrated")
        assert MIGRATE in ready.json()["error"]["message"]
        listed = await http.post("/chatkit", json=body("threads.list"))
        assert_envelope(listed, 503, "database_not_migrated")
        assert MIGRATE in listed.json()["error"]["message"]
        created = await http.post("/chatkit", json=body("threads.create", input=user_input("hi")))
        assert_envelope(created, 503, "database_not_migrated")


@pytest.mark.slow
def test_a_served_database_that_loses_its_schema_turns_readyz_off_until_migrated(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    upgrade_to_head(url)
    with serving(_env(url)) as server:
        ready_url = f"{server.base_url}/readyz"
        assert httpx.get(ready_url).status_code == 200
        command.downgrade(alembic_config(url), "base")
        # /readyz reads the schema again within a few seconds, not on every probe.
        not_ready = _eventually(ready_url, 503)
        assert_envelope(not_ready, 503, "database_not_migrated")
        assert MIGRATE in not_ready.json()["error"]["message"]
        assert_envelope(post(server.base_url, "threads.list"), 503, "database_not_migrated")
        upgrade_to_head(url)
        _eventually(ready_url, 200)
        assert post(server.base_url, "threads.list").status_code == 200
    assert MIGRATE in server.output  # the log says it too


def _eventually(url: str, status: int, within: float = 20) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        response = httpx.get(url, timeout=10)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response
        time.sleep(0.2)
