"""What the Makefile's targets install, read from `make -n` in a copy of the project's
Makefile: `make run` only what serving needs, the tools only for the targets that use
them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.needs import unavailable
from tests.support.processes import PROJECT_ROOT

TOOL_TARGETS = ["install", "test", "lint", "typecheck", "pytest", "bench", "format", "test-long"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile and pyproject.toml, and no .venv yet: a first start."""
    if shutil.which("make") is None:
        unavailable("make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(PROJECT_ROOT / name, tmp_path)
    return tmp_path


def planned(project: Path, target: str) -> list[str]:
    """The commands `make TARGET` would run there."""
    # Not under CI: `test` would plan an apt-get for its system packages. Nor as a sub-make
    # of `make test`, whose level and flags would add "Entering directory" lines.
    outer = ("CI", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    env = {key: value for key, value in os.environ.items() if key not in outer}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def installs(commands: list[str]) -> list[str]:
    return [command for command in commands if "pip install" in command]


def installs_the_package(commands: list[str]) -> bool:
    return any("install" in command and " -e ." in command for command in commands)


def installs_dev_extra(commands: list[str]) -> bool:
    return any("[dev]" in command for command in installs(commands))


def finished_install(project: Path, *stamps: str) -> None:
    """As after an install: the stamps, newer than pyproject.toml."""
    (project / ".venv").mkdir(exist_ok=True)
    pyproject = (project / "pyproject.toml").stat().st_mtime
    for stamp in stamps:
        (project / ".venv" / stamp).touch()
        os.utime(project / ".venv" / stamp, (pyproject + 10, pyproject + 10))


def test_run_installs_the_package_without_the_development_tools(project: Path) -> None:
    commands = planned(project, "run")
    assert installs_the_package(commands), commands
    assert not installs_dev_extra(commands), commands
    assert commands[-1] == ".venv/bin/chatkit-backend serve"


@pytest.mark.parametrize("target", TOOL_TARGETS)
def test_the_targets_that_use_the_tools_install_them(project: Path, target: str) -> None:
    assert installs_dev_extra(planned(project, target))


def test_the_tools_come_after_a_first_run_and_the_run_needs_nothing_after_them(
    project: Path,
) -> None:
    finished_install(project, ".installed-runtime")
    assert not installs(planned(project, "run"))
    assert installs_dev_extra(planned(project, "test"))
    finished_install(project, ".installed-runtime", ".installed")
    assert not installs(planned(project, "run"))
    assert not installs(planned(project, "test"))


def test_a_changed_pyproject_installs_again(project: Path) -> None:
    finished_install(project, ".installed-runtime", ".installed")
    stamped = (project / ".venv" / ".installed").stat().st_mtime
    os.utime(project / "pyproject.toml", (stamped + 10, stamped + 10))
    assert installs_the_package(planned(project, "run"))
    assert installs_dev_extra(planned(project, "pytest"))
