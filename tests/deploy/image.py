"""The image's view of the project, for running its commands outside Docker: an
environment with no setting of ours in it, a command run in the image's /app, and the
tables a SQLite file holds."""

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from chatkit_backend.settings import Settings

FIELDS = {name.lower() for name in Settings.model_fields}


def image_environment(**extra: str) -> dict[str, str]:
    """Our environment less every setting (none leaks in from the real one), the venv first
    on PATH as in the image, the offline model, and `extra`."""
    environment = {k: v for k, v in os.environ.items() if k.lower() not in FIELDS}
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment.get('PATH', '')}"
    return {**environment, "LLM_PROVIDER": "offline", **extra}


def tables(database: Path) -> set[str]:
    with closing(sqlite3.connect(database)) as connection:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}


def run_in(
    image_layout: Path, *command: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`command` in the image's /app (`image_layout`), with `env` as its whole environment."""
    return subprocess.run(
        list(command),
        cwd=image_layout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
