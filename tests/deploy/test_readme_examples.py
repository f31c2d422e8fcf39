"""The README's shell examples, run as a reader runs them: each block in a fresh
`bash` with `set -euo pipefail`, from a folder of its own, against a real server
process (the offline model, a temporary SQLite database) where the README says
`make run` serves, so that every command in them must succeed."""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
from contextlib import closing, suppress
from pathlib import Path

import httpx
import pytest

from tests.support.needs import unavailable
from tests.support.postgres import sqlite_url
from tests.support.processes import CLI, PROJECT_ROOT, free_port, run_cli, serving

pytestmark = pytest.mark.slow

README = PROJECT_ROOT / "README.md"
# The sections whose examples talk to the server from `make run`, in the README's order.
RUNNABLE_SECTIONS = [
    "Talking to it with curl",
    "Files in the conversation",
    "Running with JWT locally",
]
# The README's addresses: the server from `make run`, and a second one an example starts.
FIRST_PORT, SECOND_PORT = 8000, 8001
# Settings a developer's shell may have that would change what the examples meet.
FOREIGN = ("AUTH_MODE", "JWT_", "OPENAI_", "LLM_", "PORT", "HOST", "DATABASE_URL", "CI")


def shell_blocks() -> dict[str, list[str]]:
    """The README's ```sh blocks, by the heading they are under."""
    blocks: dict[str, list[str]] = {}
    heading, fence, lines = "", "", list[str]()
    for line in README.read_text().splitlines():
        if fence:
            if line == "```":
                if fence == "```sh":
                    blocks.setdefault(heading, []).append("\n".join(lines) + "\n")
                fence, lines = "", []
            else:
                lines.append(line)
        elif line.startswith("```"):
            fence = line
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return blocks


def test_the_runnable_sections_have_examples() -> None:
    blocks = shell_blocks()
    for section in RUNNABLE_SECTIONS:
        assert blocks.get(section), f"no sh block under {section!r} in the README"


@pytest.fixture
def reader_folder(tmp_path: Path) -> Path:
    """Where a reader runs the examples: a project folder, with the project's .venv."""
    for tool in ("bash", "curl", "jq", "openssl"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")
    folder = tmp_path / "reader"
    folder.mkdir()
    # The whole environment: its python finds its packages through bin/../pyvenv.cfg.
    (folder / ".venv").symlink_to(Path(CLI).parent.parent)
    return folder


def run_block(block: str, folder: Path, env: dict[str, str], ports: dict[int, int]) -> str:
    """`block` in a fresh bash that stops at the first failing command; its output."""
    for readme_port, port in ports.items():
        block = re.sub(rf"\b{readme_port}\b", str(port), block)
    script = "set -euo pipefail\nset -x\n" + block
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A group of its own: whatever the block leaves running is stopped with it.
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        output = ""
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, f"README block failed:\n{block}\n---\n{output[-4000:]}"
    return output


def test_every_example_runs_in_a_fresh_shell(tmp_path: Path, reader_folder: Path) -> None:
    settings = {
        "DATABASE_URL": sqlite_url(tmp_path),
        "ATTACHMENTS_DIR": str(tmp_path / "attachments"),
        "ATTACHMENT_CLEANUP_INTERVAL_SECONDS": "0",
        "LLM_PROVIDER": "offline",
        "OFFLINE_TOKEN_DELAY_MS": "0",
    }
    shell = {
        key: value for key, value in os.environ.items() if not key.startswith(FOREIGN)
    } | settings
    assert run_cli("migrate", env=settings).returncode == 0
    blocks = shell_blocks()
    with serving(settings) as server:
        ports = {FIRST_PORT: server.port, SECOND_PORT: free_port()}
        outputs = {
            section: [run_block(block, reader_folder, shell, ports) for block in blocks[section]]
            for section in RUNNABLE_SECTIONS
        }
        threads = httpx.post(
            f"{server.base_url}/chatkit", json={"type": "threads.list", "params": {"limit": 100}}
        ).json()["data"]
    # What the examples did is in the database: their threads, both files uploaded, the
    # image sent in a thread.
    assert len(threads) >= 2
    with closing(sqlite3.connect(tmp_path / "chatkit.db")) as database:
        files = database.execute(
            "SELECT json_extract(data, '$.name'), uploaded_at IS NOT NULL, thread_id IS NOT NULL"
            " FROM attachments ORDER BY created_at"
        ).fetchall()
    assert files == [("cat.png", 1, 1), ("notes.txt", 1, 0)]
    # The JWT example's server answered its token and is gone again.
    assert '"data"' in outputs["Running with JWT locally"][-1]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{ports[SECOND_PORT]}/healthz", timeout=2)
