"""Every limit on uploads: size, type by content, names, body shape, roles and rate.

Each refusal is the JSON envelope and leaves no bytes behind.
"""

import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.attachments import (
    BINARY,
    GIF,
    JPEG,
    PDF,
    PNG,
    TEXT,
    UPLOAD_URL,
    WEBP,
    partial_files,
    stored_files,
    upload,
    uploaded,
)
from tests.support.auth import jwt_app, new_user
from tests.support.chat_client import ChatClient, assert_envelope, chat_client

LIMIT = 4096


@pytest.fixture
async def chat(sqlite_database_url: str, tmp_path: Path) -> AsyncIterator[ChatClient]:
    async with chat_client(
        sqlite_database_url, attachments_dir=str(tmp_path), max_attachment_bytes=LIMIT
    ) as client:
        yield client


def assert_refused(response: httpx.Response, status: int, code: str, tmp_path: Path) -> None:
    assert response.status_code == status, response.text
    assert_envelope(response, status, code)
    assert stored_files(tmp_path) == set()
    assert partial_files(tmp_path) == []


# ---- size ----


async def test_direct_upload_over_the_limit_is_413(chat: ChatClient, tmp_path: Path) -> None:
    response = await upload(chat.http, "big.txt", b"a" * (LIMIT + 1), "text/plain")
    assert_refused(response, 413, "payload_too_large", tmp_path)
    assert "MiB limit" in response.json()["message"]
    assert (await upload(chat.http, "ok.txt", b"a" * LIMIT, "text/plain")).status_code == 200


async def test_a_chunked_body_is_cut_off_at_the_limit(chat: ChatClient, tmp_path: Path) -> None:
    # No Content-Length to refuse early: the limit holds while the body streams in.
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        yield b"Content-Type: text/plain\r\n\r\n"
        for _ in range(1000):
            sent.append(1024)
            yield b"a" * 1024
        yield b"\r\n--XyZ--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    response = await chat.http.post(UPLOAD_URL, content=body(), headers=headers)
    assert_refused(response, 413, "payload_too_large", tmp_path)
    assert sum(sent) < 100 * 1024  # it stopped reading long before the end


async def test_two_phase_sizes(chat: ChatClient, tmp_path: Path) -> None:
    too_big = await chat.post(
        {
            "type": "attachments.create",
            "params": {"name": "a.txt", "size": LIMIT + 1, "mime_type": "text/plain"},
        }
    )
    assert_refused(too_big, 413, "payload_too_large", tmp_path)
    empty = {"name": "a.txt", "size": 0, "mime_type": "text/plain"}
    assert_refused(
        await chat.post({"type": "attachments.create", "params": empty}),
        400,
        "invalid_request",
        tmp_path,
    )

    created = await chat.call("attachments.create", name="a.txt", size=10, mime_type="text/plain")
    url = created["upload_descriptor"]["url"]
    for data in (b"a" * 11, b"a" * 9):  # the declared size, exactly
        response = await upload(chat.http, "a.txt", data, "text/plain", url)
        assert_refused(response, 400, "invalid_request", tmp_path)
        assert "declared" in response.json()["message"]
    assert (await upload(chat.http, "a.txt", b"a" * 10, "text/plain", url)).status_code == 200


async def test_empty_files_are_refused(chat: ChatClient, tmp_path: Path) -> None:
    response = await upload(chat.http, "empty.txt", b"", "text/plain")
    assert_refused(response, 400, "invalid_request", tmp_path)


async def test_memory_stays_flat_for_a_20_mib_upload(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    size = 20 * 1024 * 1024
    source = tmp_path / "big.bin"
    with source.open("wb") as file:
        for _ in range(size // len(TEXT)):
            file.write(TEXT)
    async with chat_client(sqlite_database_url, attachments_dir=str(tmp_path / "a")) as chat:
        tracemalloc.start()
        try:
            with source.open("rb") as file:
                files = {"file": ("big.txt", file, "text/plain")}
                response = await chat.http.post(UPLOAD_URL, files=files)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status_code == 200, response.text
    # Client and server in this process together: a few chunks, not the file.
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    assert stored_files(tmp_path / "a") == {response.json()["id"]}


# ---- types, judged by content ----


@pytest.mark.parametrize(
    ("name", "data", "declared", "stored"),
    [
        ("cat.png", PNG, "image/png", "image/png"),
        ("cat.jpg", JPEG, "image/jpeg", "image/jpeg"),
        ("cat.gif", GIF, "image/gif", "image/gif"),
        ("cat.webp", WEBP, "image/webp", "image/webp"),
        ("doc.pdf", PDF, "application/pdf", "application/pdf"),
        ("notes.md", b"# Title\n", "text/markdown", "text/markdown"),
        ("data.csv", b"a,b\n1,2\n", "text/csv", "text/csv"),
        ("data.json", b'{"a": 1}', "application/json", "application/json"),
        # Misnamed images are what their bytes say.
        ("cat.jpg", PNG, "image/jpeg", "image/png"),
        # No declared type: the content decides.
        ("cat", PNG, "application/octet-stream", "image/png"),
        ("notes", TEXT, "", "text/plain"),
        # Code arrives under many names; it is text.
        ("main.py", b"print('hi')\n", "text/x-python", "text/plain"),
        ("app.ts", b"const a: number = 1;\n", "video/mp2t", "text/plain"),
    ],
)
async def test_accepted_types(
    chat: ChatClient, name: str, data: bytes, declared: str, stored: str
) -> None:
    attachment = await uploaded(chat, name, data, declared)
    assert attachment["mime_type"] == stored
    assert attachment["type"] == ("image" if stored.startswith("image/") else "file")


@pytest.mark.parametrize(
    ("name", "data", "declared"),
    [
        ("cat.png", TEXT, "image/png"),  # text dressed as an image
        ("page.png", b"<html><script>alert(1)</script></html>", "image/png"),
        ("notes.txt", PNG, "text/plain"),  # an image dressed as text
        ("doc.pdf", BINARY, "application/pdf"),
        ("notes.txt", BINARY, "text/plain"),  # not UTF-8
        ("notes.txt", "caf\u00e9".encode("latin-1"), "text/plain"),
        ("x.zip", b"PK\x03\x04" + BINARY, "application/zip"),  # not an allowed type
        ("x.svg", b"<svg onload='alert(1)'/>", "image/svg+xml"),
        ("x.html", b"<script>alert(1)</script>", "text/html"),
        ("x.bin", BINARY, "application/octet-stream"),
    ],
)
async def test_refused_types_are_415(
    chat: ChatClient, tmp_path: Path, name: str, data: bytes, declared: str
) -> None:
    response = await upload(chat.http, name, data, declared)
    if declared == "text/html":  # text: stored as plain text, never served as HTML
        assert response.json()["mime_type"] == "text/plain"
        return
    assert_refused(response, 415, "unsupported_media_type", tmp_path)


async def test_the_allowed_list_is_a_setting(sqlite_database_url: str, tmp_path: Path) -> None:
    async with chat_client(
        sqlite_database_url, attachments_dir=str(tmp_path), allowed_attachment_types="image/png"
    ) as chat:
        assert (await upload(chat.http, "a.png", PNG, "image/png")).status_code == 200
        for name, data, declared in (("a.txt", TEXT, "text/plain"), ("a.jpg", JPEG, "image/jpeg")):
            response = await upload(chat.http, name, data, declared)
            assert response.status_code == 415, response.text
        create = {"name": "a.pdf", "size": 10, "mime_type": "application/pdf"}
        response = await chat.post({"type": "attachments.create", "params": create})
        assert response.status_code == 415


async def test_two_phase_upload_must_match_the_declared_type(
    chat: ChatClient, tmp_path: Path
) -> None:
    created = await chat.call(
        "attachments.create", name="cat.png", size=len(TEXT), mime_type="image/png"
    )
    url = created["upload_descriptor"]["url"]
    response = await upload(chat.http, "cat.png", TEXT, "image/png", url)
    assert_refused(response, 415, "unsupported_media_type", tmp_path)
    # Still waiting for the right bytes: a correct upload afterwards works.
    created = await chat.call(
        "attachments.create", name="cat.png", size=len(PNG), mime_type="image/png"
    )
    response = await upload(chat.http, "x", PNG, "", created["upload_descriptor"]["url"])
    assert response.status_code == 200 and response.json()["name"] == "cat.png"


# ---- names ----


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\ada\\report.txt", "report.txt"),
        ('my "quoted" <file>.txt', "my quoted file.txt"),
        ("evil\u202etxt.exe.txt", "eviltxt.exe.txt"),
        ("tab\there\x07.txt", "tabhere.txt"),
        ("...", "file"),
        ("CON.txt", "_CON.txt"),
        ("ü" * 300 + ".txt", "ü" * 196 + ".txt"),
    ],
)
async def test_names_are_sanitised(chat: ChatClient, given: str, stored: str) -> None:
    created = await chat.call(
        "attachments.create", name=given, size=len(TEXT), mime_type="text/plain"
    )
    assert created["name"] == stored
    # Multipart clients percent-encode quotes and control characters themselves (as
    # browsers do); the other names arrive as given.
    if '"' not in given and given.isprintable():
        attachment = await uploaded(chat, given, TEXT, "text/plain")
        assert attachment["name"] == stored


async def test_download_names_are_safe_in_the_header(chat: ChatClient) -> None:
    attachment = await uploaded(chat, "résumé; x=1.txt", TEXT, "text/plain")
    described = (await chat.http.get(f"{UPLOAD_URL}/{attachment['id']}")).json()
    response = await chat.http.get(described["content_url"])
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"r_sum_; x=1.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%3B%20x%3D1.txt"
    )


# ---- the body's shape ----


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"file": "x"}}, 415, "unsupported_media_type"),
        ({"data": {"other": "x"}, "files": {"other": ("a.txt", b"x")}}, 400, "invalid_request"),
        (
            {
                "content": b"--B\r\nnot a header line at all",
                "headers": {"content-type": "multipart/form-data; boundary=B"},
            },
            400,
            "invalid_request",
        ),
        (
            {
                "content": (
                    b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
                    b"Content-Type: text/plain\r\n\r\nhello, and then nothing"
                ),
                "headers": {"content-type": "multipart/form-data; boundary=B"},
            },
            400,
            "invalid_request",
        ),
    ],
    ids=["json", "no-file-field", "malformed", "truncated"],
)
async def test_bad_bodies(
    chat: ChatClient, tmp_path: Path, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = await chat.http.post(UPLOAD_URL, **kwargs)
    assert_refused(response, status, code, tmp_path)


# ---- who may upload ----


async def test_tokens_roles_and_rate(sqlite_database_url: str, tmp_path: Path) -> None:
    async with jwt_app(
        sqlite_database_url, attachments_dir=str(tmp_path), rate_limit_per_minute=3
    ) as app:
        anonymous = await app.raw()
        response = await upload(anonymous, "a.txt", TEXT, "text/plain")
        assert_refused(response, 401, "unauthorized", tmp_path)

        viewer = await app.client(new_user(), role="viewer")
        response = await upload(viewer.http, "a.txt", TEXT, "text/plain")
        assert_refused(response, 403, "forbidden", tmp_path)
        create = {"name": "a.txt", "size": 3, "mime_type": "text/plain"}
        response = await viewer.post({"type": "attachments.create", "params": create})
        assert_refused(response, 403, "forbidden", tmp_path)

        member = await app.client(new_user())
        for _ in range(3):
            assert (await upload(member.http, "a.txt", TEXT, "text/plain")).status_code == 200
        response = await upload(member.http, "a.txt", TEXT, "text/plain")
        assert response.status_code == 429 and response.headers["retry-after"]
        assert len(stored_files(tmp_path)) == 3


async def test_a_client_that_goes_away_leaves_nothing(chat: ChatClient, tmp_path: Path) -> None:
    class Gone(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        yield b"Content-Type: text/plain\r\n\r\n"
        yield b"a" * 1000
        raise Gone

    headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    with pytest.raises(Gone):
        await chat.http.post(UPLOAD_URL, content=body(), headers=headers)
    assert stored_files(tmp_path) == set()
    assert partial_files(tmp_path) == []
