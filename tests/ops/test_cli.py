"""`chatkit-backend` as a new user meets it: its --help, its --version, and `serve` on a
port another program already holds."""

import socket
import subprocess
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.support.postgres import sqlite_url
from tests.support.processes import run_cli

pytestmark = pytest.mark.slow


def test_help_is_written_for_users() -> None:
    result = run_cli("--help", env={})
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # What each command does (a long name's help goes on the next line).
    section = text.split("commands:")[1].split("common settings")[0]
    listed = " ".join(section.split())
    for command, does in [
        ("serve", "serve"),
        ("migrate", "schema"),
        ("token", "token"),
        ("seed-demo", "demo"),
        ("cleanup", "attachments"),
        ("export", "thread"),
        ("purge", "delete"),
        ("stats", "tenant"),
    ]:
        described = listed.split(f" {command} ", 1)[1][:60]
        assert does in described, f"{command!r} is not described: {described!r}"
    # The settings a first start touches, and where the rest are.
    for setting in ("DATABASE_URL", "OPENAI_API_KEY", "PORT", "AUTH_MODE", ".env"):
        assert setting in text
    assert "README" in text and "--help" in text
    # Not the notes to maintainers it used to be.
    assert "Thin" not in text and "calls into the package" not in text


def test_each_command_explains_itself() -> None:
    result = run_cli("serve", "--help", env={})
    assert result.returncode == 0, result.stderr
    assert "POST /chatkit" in result.stdout and "migrate" in result.stdout


def test_version_is_the_installed_one_and_needs_no_configuration() -> None:
    # A broken setting does not stand between a user and --version.
    result = run_cli("--version", env={"LOG_LEVEL": "loud"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"chatkit-backend {version('chatkit-backend')}"


@pytest.fixture
def migrated_sqlite(tmp_path: Path) -> dict[str, str]:
    env = {
        "DATABASE_URL": sqlite_url(tmp_path),
        "ATTACHMENTS_DIR": str(tmp_path / "attachments"),
        "ATTACHMENT_CLEANUP_INTERVAL_SECONDS": "0",
        "LLM_PROVIDER": "offline",
    }
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    return env


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A port another server listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def _serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return run_cli("serve", *args, env=env, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"serve still ran after 60 s: {exc.stderr!r:.2000}")


def _assert_one_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.strip().endswith(expected), result.stderr


def test_serve_on_a_port_in_use_says_which_setting_to_change(
    migrated_sqlite: dict[str, str], occupied_port: int
) -> None:
    result = _serve(env={**migrated_sqlite, "HOST": "127.0.0.1", "PORT": str(occupied_port)})
    _assert_one_line(
        result,
        f"port {occupied_port} is in use; set PORT={occupied_port + 1} (or stop the other server)",
    )


def test_serve_on_a_port_in_use_names_the_flag_it_was_given(
    migrated_sqlite: dict[str, str], occupied_port: int
) -> None:
    result = _serve("--host", "127.0.0.1", "--port", str(occupied_port), env=migrated_sqlite)
    _assert_one_line(
        result,
        f"port {occupied_port} is in use; use --port {occupied_port + 1} "
        "(or stop the other server)",
    )
