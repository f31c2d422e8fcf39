"""Attachments in an S3-compatible bucket (ATTACHMENT_STORAGE=s3), end to end over HTTP
against a real S3 server (moto's, a process of its own): direct uploads through the app,
presigned uploads straight to the bucket checked before they can be sent, previews kept
beside their files, deletes and the cleanup, and an outage answered with 503."""

import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from chatkit_backend.attachments.cleanup import clean_up
from chatkit_backend.attachments.service import UPLOAD_CREATED, AttachmentService
from chatkit_backend.store.migrations import upgrade_to_head
from chatkit_backend.store.tables import UNPREFIXED
from tests.support.attachments import (
    BINARY,
    PDF,
    PNG,
    TEXT,
    content_url,
    describe,
    message,
    png,
    uploaded,
)
from tests.support.chat_client import ChatClient, assert_envelope, chat_client, post
from tests.support.fake_openai import FakeOpenAI
from tests.support.postgres import sqlite_url
from tests.support.processes import serving
from tests.support.s3 import S3Server, running_s3
from tests.support.sse import answer_text

KEY = "sk-test-" + "s3s3" * 6
NO_SCHEDULE = {"attachment_cleanup_interval_seconds": 0}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()


@asynccontextmanager
async def s3_chat(
    database_url: str, s3: S3Server, bucket: str, tmp_path: Path, **more: Any
) -> AsyncIterator[ChatClient]:
    settings = s3.settings(bucket) | NO_SCHEDULE | more
    # The dev link-signing key is kept there; no attachment bytes are.
    async with chat_client(database_url, attachments_dir=str(tmp_path), **settings) as chat:
        yield chat


@pytest.fixture
async def chat(
    database_url: str, s3: S3Server, bucket: str, tmp_path: Path
) -> AsyncIterator[ChatClient]:
    async with s3_chat(database_url, s3, bucket, tmp_path) as client:
        yield client


def _service(chat: ChatClient) -> AttachmentService:
    app = chat.http._transport.app  # type: ignore[attr-defined]
    service: AttachmentService = app.state.services.files
    return service


async def _presigned(
    chat: ChatClient, name: str, data: bytes, mime_type: str, size: int | None = None
) -> dict[str, Any]:
    """`attachments.create`, then the bytes PUT straight to the bucket, as a browser does."""
    created: dict[str, Any] = await chat.call(
        "attachments.create",
        name=name,
        size=len(data) if size is None else size,
        mime_type=mime_type,
    )
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "PUT"
    async with httpx.AsyncClient(timeout=30) as browser:
        response = await browser.put(descriptor["url"], content=data)
    assert response.status_code == 200, response.text
    return created


async def test_direct_upload_then_preview_content_and_delete(
    chat: ChatClient, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    image = await uploaded(chat, "cat.png", png(800, 600, (200, 40, 40)), "image/png")
    notes = await uploaded(chat, "notes.txt", TEXT, "text/plain")
    assert s3.keys(bucket) == {image["id"], notes["id"]}
    assert not (tmp_path / "blobs").exists()  # nothing on the local disk
    assert s3.get(bucket, notes["id"]) == TEXT

    download = await chat.http.get(await content_url(chat, notes["id"]))
    assert download.status_code == 200 and download.content == TEXT
    assert download.headers["content-type"] == "text/plain; charset=utf-8"
    assert download.headers["content-length"] == str(len(TEXT))
    assert "sandbox" in download.headers["content-security-policy"]

    preview = await chat.http.get(image["preview_url"])
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/webp"
    # Made once from the object, and kept beside it in the bucket.
    assert s3.keys(bucket) == {image["id"], image["id"] + ".preview", notes["id"]}
    assert s3.get(bucket, image["id"] + ".preview") == preview.content
    again = await chat.http.get(image["preview_url"])
    assert again.content == preview.content

    assert await chat.call("attachments.delete", attachment_id=image["id"]) == {}
    assert s3.keys(bucket) == {notes["id"]}  # the object and its preview
    assert_envelope(await chat.http.get(image["preview_url"]), 403, "forbidden")


async def test_a_large_direct_upload_streams_in_parts(
    sqlite_database_url: str, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    big = b"line of text\n" * (900 * 1024)  # ~11.7 MB: three parts of a multipart upload
    limits = {
        "max_attachment_bytes": 12 * 1024 * 1024,
        "attachment_quota_unsent_bytes": 100 * 1024 * 1024,
    }
    async with s3_chat(sqlite_database_url, s3, bucket, tmp_path, **limits) as chat:
        notes = await uploaded(chat, "big.txt", big, "text/plain")
        assert s3.get(bucket, notes["id"]) == big
        assert s3.multipart_uploads(bucket) == []
        download = await chat.http.get(await content_url(chat, notes["id"]))
        assert download.content == big
        # Refused halfway (not text): the parts sent so far are thrown away.
        response = await chat.http.post(
            "/chatkit/attachments", files={"file": ("big.txt", big + b"\x00" * 10, "text/plain")}
        )
        assert_envelope(response, 415, "unsupported_media_type")
    assert s3.keys(bucket) == {notes["id"]}
    assert s3.multipart_uploads(bucket) == []


async def test_presigned_upload_is_checked_then_sent_to_the_model(
    fake: FakeOpenAI, database_url: str, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    model = {
        "llm_provider": "openai",
        "llm_api": "responses",
        "titles": False,
        "openai_api_key": KEY,
        "openai_base_url": fake.base_url,
    }
    async with s3_chat(database_url, s3, bucket, tmp_path, **model) as chat:
        created = await _presigned(chat, "notes.txt", TEXT, "text/plain")
        assert created["upload_descriptor"]["url"].startswith(f"{s3.endpoint}/{bucket}/")
        # In the bucket, but not an attachment's file until checked.
        assert s3.keys(bucket) == {f"incoming/{created['id']}"}
        status = (await describe(chat, created["id"])).json()
        assert status["uploaded"] is False

        events = await chat.stream("threads.create", input=message("Read this", created["id"]))
        assert answer_text(events) == "Hello from the fake model."
        [request] = fake.requests
        [*_, user] = [item for item in request.items if item.get("role") == "user"]
        assert user["content"][1]["text"] == (
            f'Attached file "notes.txt" (text/plain):\n{TEXT.decode()}'
        )
        # Taken: copied into place in the bucket, the upload's object gone.
        assert s3.keys(bucket) == {created["id"]}
        status = (await describe(chat, created["id"])).json()
        assert status["uploaded"] is True and status["size"] == len(TEXT)
        download = await chat.http.get(status["content_url"])
        assert download.content == TEXT


async def test_presigned_image_checked_by_the_client_then_previewed(
    chat: ChatClient, s3: S3Server, bucket: str
) -> None:
    created = await _presigned(chat, "photo.png", PNG, "image/png")
    response = await chat.http.post(f"/chatkit/attachments/{created['id']}/complete")
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["id"] == created["id"] and done["mime_type"] == "image/png"
    assert "upload_descriptor" not in done and "metadata" not in done
    # Asking again is harmless; the attachment is as it was.
    again = await chat.http.post(f"/chatkit/attachments/{created['id']}/complete")
    assert again.status_code == 200 and again.json()["id"] == created["id"]

    preview = await chat.http.get(done["preview_url"])
    assert preview.status_code == 200 and preview.content.startswith(b"RIFF")
    assert s3.keys(bucket) == {created["id"], created["id"] + ".preview"}
    events = await chat.stream("threads.create", input=message("see", created["id"]))
    assert "I received 1 attachment: photo.png (image/png)." in answer_text(events)


async def test_presigned_upload_not_as_declared_is_refused_before_sending(
    chat: ChatClient, s3: S3Server, bucket: str
) -> None:
    # Nothing PUT yet: not finished uploading, as with the local disk.
    pending = await chat.call("attachments.create", name="a.txt", size=4, mime_type="text/plain")
    early = await chat.post(
        {"type": "threads.create", "params": {"input": message("see", pending["id"])}}
    )
    assert_envelope(early, 400, "invalid_request")
    assert "has not finished uploading" in early.json()["message"]

    # Larger than declared (the presigned URL cannot bound the size).
    big = await _presigned(chat, "big.txt", TEXT, "text/plain", size=10)
    response = await chat.post(
        {"type": "threads.create", "params": {"input": message("see", big["id"])}}
    )
    assert_envelope(response, 400, "invalid_request")
    assert f"The upload has {len(TEXT)} bytes; 10 were declared" in response.json()["message"]

    # Not what it claims: binary bytes for a PDF.
    fake_pdf = await _presigned(chat, "report.pdf", BINARY, "application/pdf")
    response = await chat.http.post(f"/chatkit/attachments/{fake_pdf['id']}/complete")
    assert_envelope(response, 415, "unsupported_media_type")

    # Refused bytes are gone from the bucket; the records wait, unsent, for the cleanup.
    assert s3.keys(bucket) == set()
    for attachment_id in (big["id"], fake_pdf["id"]):
        assert (await describe(chat, attachment_id)).json()["uploaded"] is False
    threads = await chat.call("threads.list")
    assert threads["data"] == []

    # While its link lives, the right file (of the declared size) can be PUT again.
    real_pdf = PDF + b"\n" * (len(BINARY) - len(PDF))
    async with httpx.AsyncClient(timeout=30) as browser:
        response = await browser.put(fake_pdf["upload_descriptor"]["url"], content=real_pdf)
    assert response.status_code == 200
    events = await chat.stream("threads.create", input=message("ok", fake_pdf["id"]))
    assert "report.pdf (application/pdf)" in answer_text(events)


async def test_a_late_check_counts_the_file_against_the_quota_again(
    sqlite_database_url: str, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    quotas = {
        "max_attachment_bytes": 1000,
        "attachment_quota_unsent_count": 5,
        "attachment_quota_unsent_bytes": 1000,
        "attachment_quota_total_bytes": 5000,
    }
    async with s3_chat(sqlite_database_url, s3, bucket, tmp_path, **quotas) as chat:
        late = await _presigned(chat, "late.txt", b"x" * 600, "text/plain")
        # Its link died (so the quota stopped holding its 600 bytes) before it was used.
        service = _service(chat)
        old = datetime.now(UTC) - timedelta(hours=1)
        record = await service.records.load_unscoped(late["id"])
        assert record is not None
        data = record.attachment
        data.metadata = {UPLOAD_CREATED: int(old.timestamp())}
        async with service.records.engine.begin() as conn:
            await conn.execute(
                update(UNPREFIXED.attachments)
                .where(UNPREFIXED.attachments.c.id == late["id"])
                .values(created_at=old, data=data.model_dump_json())
            )
        # Meanwhile the room went to another file.
        await uploaded(chat, "now.txt", b"y" * 600, "text/plain")
        response = await chat.http.post(f"/chatkit/attachments/{late['id']}/complete")
        assert_envelope(response, 413, "quota_exceeded")
        assert f"incoming/{late['id']}" not in s3.keys(bucket)


@pytest.fixture
async def own_database_chat(s3: S3Server, bucket: str, tmp_path: Path) -> AsyncIterator[ChatClient]:
    """On a database of its own: a pass of the cleanup counts every record in it."""
    url = sqlite_url(tmp_path)
    upgrade_to_head(url)
    async with s3_chat(url, s3, bucket, tmp_path) as client:
        yield client


async def test_cleanup_removes_unsent_objects_orphans_and_stale_uploads(
    own_database_chat: ChatClient, s3: S3Server, bucket: str
) -> None:
    chat = own_database_chat
    sent = await uploaded(chat, "sent.png", PNG, "image/png")
    await chat.http.get(sent["preview_url"])  # a preview to keep with it
    unsent = await uploaded(chat, "unsent.txt", TEXT, "text/plain")
    await chat.call("attachments.create", name="never.txt", size=3, mime_type="text/plain")
    stale = await _presigned(chat, "stale.txt", TEXT, "text/plain")
    await chat.stream("threads.create", input=message("keep", sent["id"]))
    # Bytes without a record (a crash between the two), and something not ours at all.
    orphan = "atc_" + "e" * 32
    s3.put(bucket, orphan, b"stray")
    s3.put(bucket, orphan + ".preview", b"stray preview")
    s3.put(bucket, "notes/readme.md", b"not an attachment key")
    s3.put(bucket, "atc_elsewhere", b"another prefix's", prefix="elsewhere")
    service = _service(chat)

    later = datetime.now(UTC) + timedelta(hours=25)
    report = await clean_up(service.records, service.storage, timedelta(hours=24), now=later)

    assert (report.unsent, report.orphans, report.partial) == (3, 1, 1)
    assert s3.keys(bucket) == {sent["id"], sent["id"] + ".preview", "notes/readme.md"}
    assert s3.keys(bucket, prefix="elsewhere") == {"atc_elsewhere"}
    for gone in (unsent, stale):
        assert_envelope(await describe(chat, gone["id"]), 404, "not_found")
    report = await clean_up(service.records, service.storage, timedelta(hours=24), now=later)
    assert (report.unsent, report.orphans, report.partial) == (0, 0, 0)


async def test_bucket_down_answers_503_and_the_rest_keeps_working(
    sqlite_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running_s3() as own:  # a server of this test's own, to stop
        bucket = own.new_bucket()
        async with s3_chat(sqlite_database_url, own, bucket, tmp_path) as chat:
            notes = await uploaded(chat, "notes.txt", TEXT, "text/plain")
            image = await uploaded(chat, "cat.png", PNG, "image/png")
            link = await content_url(chat, notes["id"])
            pending = await _presigned(chat, "later.txt", TEXT, "text/plain")
            thread_id, _ = await chat.new_thread("before the outage")
            own.stop()
            caplog.clear()

            for response in (
                await chat.http.get(link),
                await chat.http.get(image["preview_url"]),
                await chat.http.post(
                    "/chatkit/attachments", files={"file": ("a.txt", TEXT, "text/plain")}
                ),
                await chat.http.post(f"/chatkit/attachments/{pending['id']}/complete"),
                await chat.post(
                    {"type": "threads.create", "params": {"input": message("x", pending["id"])}}
                ),
            ):
                assert_envelope(response, 503, "storage_unavailable")
                assert response.headers["retry-after"] == "5"

            # What needs no file still works.
            threads = await chat.call("threads.list")
            assert [t["id"] for t in threads["data"]] == [thread_id]
            assert (await describe(chat, notes["id"])).json()["uploaded"] is True
            events = await chat.stream(
                "threads.add_user_message", thread_id=thread_id, input=message("still here?")
            )
            assert 'You said: "still here?"' in answer_text(events)
            # A delete forgets the record; its object waits for the cleanup.
            assert await chat.call("attachments.delete", attachment_id=notes["id"]) == {}

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("object storage unavailable" in r.getMessage() for r in warnings)
    assert all(r.exc_info is None for r in caplog.records)
    assert "Traceback" not in caplog.text
    assert own.endpoint not in caplog.text


@pytest.mark.slow
def test_bucket_lost_mid_download_ends_the_file_short_without_a_traceback(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    upgrade_to_head(url)
    # Far more than the sockets between moto, the server and the client buffer, so the
    # download is still under way when the bucket goes.
    data = b"%PDF-1.4\n" + os.urandom(60 * 1024 * 1024)
    with running_s3() as own:
        env = {name.upper(): str(value) for name, value in own.settings(own.new_bucket()).items()}
        env |= {
            "DATABASE_URL": url,
            "ATTACHMENTS_DIR": str(tmp_path),
            "MAX_ATTACHMENT_BYTES": str(len(data)),
            "ATTACHMENT_QUOTA_UNSENT_BYTES": str(len(data)),
            "ATTACHMENT_QUOTA_TOTAL_BYTES": str(len(data)),
            "ATTACHMENT_CLEANUP_INTERVAL_SECONDS": "0",
        }
        # The log must be clean when the server stops (`serving` checks it).
        with serving(env) as server:
            base = server.base_url
            created = post(
                base,
                "attachments.create",
                name="big.pdf",
                size=len(data),
                mime_type="application/pdf",
            ).json()
            put = httpx.put(created["upload_descriptor"]["url"], content=data, timeout=120)
            assert put.status_code == 200
            done = httpx.post(f"{base}/chatkit/attachments/{created['id']}/complete", timeout=60)
            assert done.status_code == 200, done.text
            link = httpx.get(f"{base}/chatkit/attachments/{created['id']}").json()["content_url"]
            received = 0
            with (
                pytest.raises(httpx.RemoteProtocolError, match="complete message body"),
                httpx.stream("GET", link, timeout=60) as response,
            ):
                assert response.headers["content-length"] == str(len(data))
                for chunk in response.iter_bytes():
                    if received == 0:
                        own.stop()
                    received += len(chunk)
            assert 0 < received < len(data)
        assert "object storage unavailable during download" in server.output
