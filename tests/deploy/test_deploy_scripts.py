"""docker/entrypoint.sh and docker/migrate.sh, run outside Docker from the image's layout."""

import time
from pathlib import Path

import httpx
import pytest

from tests.deploy.image import image_environment, run_in, tables
from tests.support.processes import free_port, serving

pytestmark = pytest.mark.slow


def test_migrate_script_migrates_and_is_idempotent(image_layout: Path, tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    env = image_environment(DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    for _ in range(2):
        result = run_in(image_layout, str(image_layout / "docker" / "migrate.sh"), env=env)
        assert result.returncode == 0, result.stderr
    assert {"threads", "items", "chatkit_alembic_version"} <= tables(database)


def test_migrate_script_gives_up_when_the_database_never_answers(image_layout: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    started = time.monotonic()
    migrate = str(image_layout / "docker" / "migrate.sh")
    result = run_in(
        image_layout, migrate, env=image_environment(DATABASE_URL=url, DB_WAIT_SECONDS="2")
    )
    assert result.returncode == 1
    assert "did not answer" in result.stderr
    assert 2 <= time.monotonic() - started < 30


def test_entrypoint_migrates_then_becomes_the_server(image_layout: Path, tmp_path: Path) -> None:
    database = tmp_path / "served.db"
    env = image_environment(DATABASE_URL=f"sqlite+aiosqlite:///{database}", MIGRATE_ON_START="true")
    entrypoint = str(image_layout / "docker" / "entrypoint.sh")
    with serving(env, entrypoint, "chatkit-backend", "serve") as server:
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200
        # exec: the shell's process is now the server, so the signal reaches it directly.
        assert "chatkit-backend" in Path(f"/proc/{server.process.pid}/cmdline").read_text()
        status, seconds = server.terminate()
    assert status == 0
    assert seconds < 10
    assert "threads" in tables(database)
    assert "database is at the newest schema" in server.output


def test_entrypoint_without_migration_just_runs_the_command(image_layout: Path) -> None:
    entrypoint = str(image_layout / "docker" / "entrypoint.sh")
    env = image_environment(
        MIGRATE_ON_START="false", DATABASE_URL="sqlite+aiosqlite:///nowhere/x.db"
    )
    result = run_in(image_layout, entrypoint, "chatkit-backend", "--help", env=env)
    assert result.returncode == 0
    assert "export" in result.stdout and "purge" in result.stdout
    assert not (image_layout / "nowhere").exists()
