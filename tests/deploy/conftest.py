"""The image's /app, laid out in a temporary folder."""

import shutil
from pathlib import Path

import pytest

from tests.support.processes import PROJECT_ROOT


@pytest.fixture
def image_layout(tmp_path: Path) -> Path:
    """The image's /app: alembic.ini, alembic/ and docker/, and no source tree."""
    workdir = tmp_path / "app"
    workdir.mkdir()
    shutil.copy(PROJECT_ROOT / "alembic.ini", workdir)
    for folder in ("alembic", "docker"):
        shutil.copytree(
            PROJECT_ROOT / folder, workdir / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return workdir
