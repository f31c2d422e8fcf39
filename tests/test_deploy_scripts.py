"""docker/entrypoint.sh and docker/migrate.sh, run outside Docker from the image's layout."""

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.served_helpers import served
from tests.server_process import free_port
from tests.test_deploy_files import FIELDS, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def image_layout(tmp_path: Path) -> Path:
    """The image's /app: alembic.ini, alembic/ and docker/, and no source tree."""
    workdir = tmp_path / "app"
    workdir.mkdir()
    shutil.copy(ROOT / "alembic.ini", workdir)
    for folder in ("alembic", "docker"):
        shutil.copytree(
            ROOT / folder, workdir / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return workdir


def _environment(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k.lower() not in FIELDS}
    # The image puts the venv first on PATH; so does this.
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment.get('PATH', '')}"
    return {**environment, "LLM_PROVIDER": "offline", **extra}


def _tables(database: Path) -> set[str]:
    with closing(sqlite3.connect(database)) as connection:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}


def test_migrate_script_migrates_and_is_idempotent(image_layout: Path, tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    env = _environment(DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    for _ in range(2):
        result = subprocess.run(
            [str(image_layout / "docker" / "migrate.sh")],
            cwd=image_layout,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert {"threads", "items", "alembic_version"} <= _tables(database)


def test_migrate_script_gives_up_when_the_database_never_answers(image_layout: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    started = time.monotonic()
    result = subprocess.run(
        [str(image_layout / "docker" / "migrate.sh")],
        cwd=image_layout,
        env=_environment(DATABASE_URL=url, DB_WAIT_SECONDS="2"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "did not answer" in result.stderr
    assert 2 <= time.monotonic() - started < 30


def test_entrypoint_migrates_then_becomes_the_server(image_layout: Path, tmp_path: Path) -> None:
    database = tmp_path / "served.db"
    env = _environment(DATABASE_URL=f"sqlite+aiosqlite:///{database}", MIGRATE_ON_START="true")
    entrypoint = str(image_layout / "docker" / "entrypoint.sh")
    with served(env, entrypoint, "chatkit-backend", "serve") as server:
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200
        # exec: the shell's process is now the server, so the signal reaches it directly.
        assert "chatkit-backend" in Path(f"/proc/{server.process.pid}/cmdline").read_text()
        status, seconds = server.terminate()
    assert status == 0
    assert seconds < 10
    assert "threads" in _tables(database)
    assert "database is at the newest schema" in server.output


def test_entrypoint_without_migration_just_runs_the_command(image_layout: Path) -> None:
    result = subprocess.run(
        [str(image_layout / "docker" / "entrypoint.sh"), "chatkit-backend", "--help"],
        cwd=image_layout,
        env=_environment(MIGRATE_ON_START="false", DATABASE_URL="sqlite+aiosqlite:///nowhere/x.db"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "export" in result.stdout and "purge" in result.stdout
    assert not (image_layout / "nowhere").exists()
