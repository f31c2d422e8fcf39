"""A real S3-compatible server for tests: moto's standalone server, a process of its own on
a free loopback port (so a test can stop it), and plain-HTTP looks at what it holds.

    with running_s3() as s3:
        bucket = s3.new_bucket()
        settings = s3.settings(bucket)          # ATTACHMENT_STORAGE=s3 and friends
        s3.keys(bucket)                         # every object's key

moto is a dev dependency: `require_moto` skips without it, and fails under CI.
"""

import secrets
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import obstore
from obstore.store import S3Store

from tests.support.needs import unavailable
from tests.support.processes import free_port

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
REGION = "us-east-1"
# moto checks no signatures; real stores would. Fixed, so presigned URLs are stable.
ACCESS_KEY_ID = "AKIATESTKEYID0000000"
SECRET_ACCESS_KEY = "test-secret-access-key-for-moto-0000000"
PREFIX = "attachments"
_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def require_moto() -> Path:
    if not MOTO_SERVER.exists():
        unavailable(f"moto's server is not installed ({MOTO_SERVER}); pip install 'moto[server]'")
    return MOTO_SERVER


class S3Server:
    """One moto server process; `stop` it to see how the app copes with an outage."""

    def __init__(self, binary: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by `stop`
        self.process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_up()

    def _wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            return
        self.stop()
        self._log.seek(0)
        raise RuntimeError(f"moto_server did not start: {self._log.read()[-2000:]!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def new_bucket(self) -> str:
        name = f"chatkit-{secrets.token_hex(6)}"
        response = httpx.put(f"{self.endpoint}/{name}", timeout=10)
        response.raise_for_status()
        return name

    def settings(self, bucket: str, prefix: str = PREFIX) -> dict[str, Any]:
        """The app's settings for this bucket (as keyword arguments to `Settings`)."""
        return {
            "attachment_storage": "s3",
            "s3_bucket": bucket,
            "s3_prefix": prefix,
            "s3_endpoint_url": self.endpoint,
            "aws_region": REGION,
            "aws_access_key_id": ACCESS_KEY_ID,
            "aws_secret_access_key": SECRET_ACCESS_KEY,
        }

    def store(self, bucket: str, prefix: str = PREFIX) -> S3Store:
        """A client of the test's own for `bucket` under `prefix` (objects are private)."""
        return S3Store(
            bucket,
            prefix=prefix,
            endpoint=self.endpoint,
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            client_options={"allow_http": True},
        )

    def keys(self, bucket: str, prefix: str = PREFIX) -> set[str]:
        """The keys under `prefix/`, without it (`atc_x`, `atc_x.preview`, `incoming/atc_y`)."""
        return {meta["path"] for page in obstore.list(self.store(bucket, prefix)) for meta in page}

    def get(self, bucket: str, key: str, prefix: str = PREFIX) -> bytes:
        return bytes(obstore.get(self.store(bucket, prefix), key).bytes())

    def put(self, bucket: str, key: str, data: bytes, prefix: str = PREFIX) -> None:
        obstore.put(self.store(bucket, prefix), key, data)

    def multipart_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted."""
        response = httpx.get(f"{self.endpoint}/{bucket}", params={"uploads": ""}, timeout=10)
        response.raise_for_status()
        root = ET.fromstring(response.content)
        return [node.text or "" for node in root.iter(f"{_S3}Key")]


@contextmanager
def running_s3() -> Iterator[S3Server]:
    """A started moto server (skipped without moto, failed under CI), stopped after."""
    server = S3Server(require_moto())
    try:
        yield server
    finally:
        server.stop()
