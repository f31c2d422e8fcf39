"""Server processes for tests and the benchmark: started (and started again), waited for
until they answer HTTP, stopped with SIGTERM or killed, their output in a log file.

    with serving({"DATABASE_URL": url}) as server:    # `chatkit-backend serve`
        httpx.get(f"{server.base_url}/readyz")
        status, seconds = server.terminate()

No pytest here (bench/ imports it).
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("chatkit-backend"))

# Log lines that mean a crash or a leak, whatever the test was doing.
BAD_LOG_LINES = (
    "Traceback",
    "unhandled",
    "Exception in ASGI application",
    "Task was destroyed but it is pending",
    "exception was never retrieved",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`chatkit-backend ARGS` from the project, with `env` added to ours."""
    return subprocess.run(
        [CLI, *args],
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def serve_command(port: int, *argv: str) -> list[str]:
    """`chatkit-backend serve` (or `argv`, e.g. a script that execs it) on 127.0.0.1:`port`."""
    return [*(argv or (CLI, "serve")), "--host", "127.0.0.1", "--port", str(port)]


def answers_http(port: int) -> bool:
    """Whether 127.0.0.1:`port` answers an HTTP request (`GET /healthz`) at all."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


class ServerProcess:
    """`command`, serving HTTP on 127.0.0.1:`port`, with `env` added to our environment.

    With `own_session` it leads a process group of its own, and signals reach the whole
    group (a multi-worker server's workers too).
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        port: int,
        *,
        name: str = "server",
        cwd: Path = PROJECT_ROOT,
        own_session: bool = False,
    ) -> None:
        self.command = list(command)
        # Run from the project folder, a test's server would otherwise sweep the
        # developer's ./data/attachments against its own database (the cleanup's orphan
        # pass); a test that wants the in-server cleanup sets it.
        self.env = {"ATTACHMENT_CLEANUP_INTERVAL_SECONDS": "0", **env}
        self.log_path = log_path
        self.port = port
        self.name = name
        self.cwd = cwd
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None
        self.output = ""  # the log as it was when the process last exited

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._running().pid

    def _running(self) -> "subprocess.Popen[bytes]":
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process

    def start(self, timeout: float = 30) -> None:
        """Start it (again: the log goes on); return once it answers HTTP."""
        # Output to a file: a pipe nobody reads fills up and blocks a busy server.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        deadline = time.monotonic() + timeout
        while not answers_http(self.port):
            if self.process.poll() is not None:
                status = self.process.returncode
                self._exited()
                raise RuntimeError(f"{self.name} exited with {status}:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer within {timeout} s")
            time.sleep(0.05)

    def _signal(self, number: signal.Signals) -> None:
        process = self._running()
        with suppress(ProcessLookupError):
            if self.own_session:
                os.killpg(process.pid, number)
            else:
                process.send_signal(number)

    def terminate(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM; wait for the exit; return its status and how long it took. Still
        running after `timeout`: killed, and TimeoutError."""
        process = self._running()
        started = time.monotonic()
        self._signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"{self.name} still ran {timeout} s after SIGTERM") from None
        self._exited()
        return status, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the OOM killer stops it."""
        process = self._running()
        self._signal(signal.SIGKILL)
        process.wait(timeout=10)
        self._exited()

    def stop(self, timeout: float = 30) -> None:
        """Terminate it if it runs (killed after `timeout`)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with suppress(TimeoutError):
                self.terminate(timeout)
        self._exited()

    def _exited(self) -> None:
        self.process = None
        self.output = self.log()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def assert_clean_log(self) -> None:
        bad = [
            line for line in self.log().splitlines() if any(mark in line for mark in BAD_LOG_LINES)
        ]
        assert not bad, "\n".join(bad[:20])


@contextmanager
def serving(
    env: Mapping[str, str], *argv: str, log_dir: Path | None = None
) -> Iterator[ServerProcess]:
    """`chatkit-backend serve` (or `argv`, see `serve_command`) with `env`, on a free port,
    from the project folder; stopped after the block, and then its log must be clean.
    The log is in `log_dir`, or in a temporary folder (`server.output` keeps it)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="chatkit-serve-") as folder:
        log_path = (log_dir or Path(folder)) / f"server-{port}.log"
        server = ServerProcess(serve_command(port, *argv), env, log_path, port)
        server.start()
        try:
            yield server
        finally:
            server.stop()
        server.assert_clean_log()
