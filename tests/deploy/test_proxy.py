"""The shipped reverse proxy (docker/nginx/): its numbers match the app's settings, and
Debian's nginx, run with the project's files (test ports and paths swapped in) in front
of a real `chatkit-backend serve`, streams answers unbuffered, refuses what is too big
or too slow with the app's JSON errors, and hands the app the client's address.

Locally these skip without nginx; under CI (`make test` installs it) they fail.
"""

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from chatkit_backend.api.attachments import MULTIPART_OVERHEAD_BYTES
from chatkit_backend.settings import Settings
from tests.support.needs import require_nginx
from tests.support.nginx import NGINX_DIR, nginx_command, render_nginx
from tests.support.processes import ServerProcess, free_port, run_cli, serving
from tests.support.raw_http import connect, head, read_response, until_closed
from tests.support.sse import parse_events, user_input

# Short stand-ins for the shipped 20 s and 30 s, so a stall is seen quickly.
TEST_TIMEOUT = 2
LATE = 15.0
SECRET = "proxy-test-" + "k3y" * 10
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2}


def _directive(text: str, name: str) -> list[str]:
    """The arguments of every `name ...;` line in `text` (comments left out)."""
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    return [m.group(1) for line in lines if (m := re.match(rf"\s*{name}\s+([^;]+);", line))]


def _size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([km]?)", value.strip().lower()).groups()  # type: ignore[union-attr]
    return int(number) * _SIZE_UNITS[unit]


# ---- the numbers, against the settings' defaults (no nginx needed) ----


def test_the_proxy_limits_are_the_apps() -> None:
    site = (NGINX_DIR / "chatkit.conf").read_text()
    defaults = Settings(_env_file=None)
    count, size = _directive(site, "large_client_header_buffers")[0].split()
    assert int(count) * _size(size) == defaults.max_header_bytes
    # An 8 KiB JWT fits on one header line.
    assert _size(size) >= 8 * 1024 + len("Authorization: Bearer ")
    assert _directive(site, "client_header_timeout") == [f"{defaults.header_timeout_seconds:g}s"]
    assert _directive(site, "client_body_timeout") == [f"{defaults.body_timeout_seconds:g}s"]
    everything, uploads = (_size(value) for value in _directive(site, "client_max_body_size"))
    assert everything == defaults.max_body_bytes
    assert uploads >= defaults.max_attachment_bytes + MULTIPART_OVERHEAD_BYTES
    # Longer than the longest silence in a stream (the keep-alive comment's interval).
    (read_timeout,) = _directive(site, "proxy_read_timeout")
    assert read_timeout.endswith("m") and int(read_timeout[:-1]) * 60 > 300
    assert _directive(site, "proxy_http_version") == ["1.1"]
    assert _directive(site, "proxy_set_header X-Forwarded-For") == ["$remote_addr"]


# ---- Debian's nginx in front of a served app ----


@dataclass
class Deployment:
    app: ServerProcess
    proxy: ServerProcess
    env: dict[str, str]

    @property
    def port(self) -> int:
        return self.proxy.port

    def token(self, user: str) -> str:
        minted = run_cli("token", "--user", user, "--tenant", "t1", env=self.env)
        assert minted.returncode == 0, minted.stderr
        return minted.stdout.strip()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    nginx = require_nginx()
    folder = tmp_path_factory.mktemp("proxy")
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'served.db'}",
        "LLM_PROVIDER": "offline",
        # An answer of a few seconds: time to see it arrive piece by piece.
        "OFFLINE_TOKEN_DELAY_MS": "150",
        "AUTH_MODE": "jwt",
        "JWT_SECRET": SECRET,
        "FAILED_AUTH_PER_MINUTE": "2",
        # As compose.yaml sets it: any peer's X-Forwarded-For is believed, so nginx must
        # never pass on one a client wrote.
        "TRUSTED_PROXIES": "*",
    }
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    with serving(env) as app:
        port = free_port()
        config = render_nginx(folder, [app.port], port, client_timeout=TEST_TIMEOUT)
        command = nginx_command(nginx, config)
        proxy = ServerProcess(command, {}, folder / "nginx.log", port, name="nginx", cwd=folder)
        proxy.start()
        try:
            yield Deployment(app, proxy, env)
        finally:
            proxy.stop()
        errors = (folder / "nginx.log").read_text(errors="replace")
        assert "[emerg]" not in errors and "[alert]" not in errors, errors[-2000:]


def _is_json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code


def test_a_streamed_answer_passes_through_unbuffered(deployment: Deployment) -> None:
    token = deployment.token("streamer")
    request = {"type": "threads.create", "params": {"input": user_input("tell me a story")}}
    first_delta: float | None = None
    text = ""
    with httpx.Client(base_url=f"http://127.0.0.1:{deployment.port}", timeout=60) as http:
        started = time.monotonic()
        with http.stream(
            "POST", "/chatkit", json=request, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for chunk in response.iter_text():
                text += chunk
                if first_delta is None and "text_delta" in text:
                    first_delta = time.monotonic() - started
        ended = time.monotonic() - started
    events = parse_events(text)
    assert any(e["type"] == "thread.item.done" for e in events)
    assert first_delta is not None
    # Buffered, the deltas would come together at the end; here the first comes while
    # most of the answer (seconds of it) is still to be written.
    assert ended - first_delta > 2.0, (first_delta, ended)


def test_headers_over_the_limit_are_refused_at_the_proxy(deployment: Deployment) -> None:
    base = f"http://127.0.0.1:{deployment.port}"
    one_long_line = {"X-Long": "l" * (20 * 1024)}
    too_many_bytes = {f"X-Part-{i}": "p" * (12 * 1024) for i in range(3)}
    for headers in (one_long_line, too_many_bytes):
        response = httpx.get(f"{base}/healthz", headers=headers, timeout=30)
        _is_json_error(response, 431, "headers_too_large")
        # nginx's answer: the app gives every response an X-Request-ID.
        assert "x-request-id" not in response.headers
    jwt_sized = httpx.get(
        f"{base}/healthz", headers={"Authorization": "Bearer " + "j" * 8192}, timeout=30
    )
    assert jwt_sized.status_code == 200


def test_a_body_over_max_body_bytes_is_413_at_the_proxy(deployment: Deployment) -> None:
    token = deployment.token("big-sender")
    response = httpx.post(
        f"http://127.0.0.1:{deployment.port}/chatkit",
        content=b" " * (2 * 1024 * 1024),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )
    _is_json_error(response, 413, "payload_too_large")
    assert "x-request-id" not in response.headers


def test_a_stalled_head_is_closed_by_the_proxy(deployment: Deployment) -> None:
    with connect(deployment.port) as sock:
        sock.sendall(head("GET", "/healthz"))
        _, closed = until_closed(sock, TEST_TIMEOUT + LATE)
    assert closed is not None


def test_a_stalled_body_never_reaches_the_app(deployment: Deployment) -> None:
    token = deployment.token("staller")
    before = deployment.app.log().count("POST /chatkit")
    with connect(deployment.port) as sock:
        sock.sendall(
            head(
                "POST",
                "/chatkit",
                ("Authorization", f"Bearer {token}"),
                ("Content-Type", "application/json"),
                ("Content-Length", "100"),
            )
            + b"\r\n"
            + b'{"type": '
        )
        _, closed = until_closed(sock, TEST_TIMEOUT + LATE)
    assert closed is not None
    # nginx reads a body whole before passing it on: the app never saw this one.
    assert deployment.app.log().count("POST /chatkit") == before


def test_the_app_sees_the_clients_address_not_the_proxys(deployment: Deployment) -> None:
    # FAILED_AUTH_PER_MINUTE=2 counts by the address the app believes. From 127.0.0.2,
    # its third failure is refused; 127.0.0.3 is another client, whatever it claims
    # in an X-Forwarded-For of its own.
    def fail(source: str, claimed: str) -> int:
        with connect(deployment.port, source=source) as sock:
            sock.sendall(
                head(
                    "POST",
                    "/chatkit",
                    ("Authorization", "Bearer not-a-token"),
                    ("Content-Type", "application/json"),
                    ("Content-Length", "2"),
                    ("X-Forwarded-For", claimed),
                )
                + b"\r\n{}"
            )
            return read_response(sock).status

    assert [fail("127.0.0.2", f"10.0.0.{i}") for i in range(3)] == [401, 401, 429]
    assert fail("127.0.0.3", "127.0.0.2") == 401
