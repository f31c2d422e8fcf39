"""Deleting and cleaning up: no record and no file is left behind.

On SQLite and PostgreSQL (the `database_url` fixture), plus the CLI on SQLite.
"""

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from chatkit_backend.attachments.cleanup import clean_up
from chatkit_backend.attachments.service import AttachmentService
from chatkit_backend.store.migrations import upgrade_to_head
from chatkit_backend.store.tables import UNPREFIXED
from tests.support.attachments import (
    PNG,
    TEXT,
    blob_paths,
    describe,
    message,
    partial_files,
    stored_files,
    uploaded,
)
from tests.support.chat_client import ChatClient, assert_envelope, chat_client
from tests.support.postgres import sqlite_url
from tests.support.processes import run_cli

# The server's own cleanup (on by default) would race the passes these tests run and count.
NO_SCHEDULE = {"attachment_cleanup_interval_seconds": 0}


@pytest.fixture
async def chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatClient]:
    async with chat_client(database_url, attachments_dir=str(tmp_path), **NO_SCHEDULE) as client:
        yield client


def _service(chat: ChatClient) -> AttachmentService:
    app = chat.http._transport.app  # type: ignore[attr-defined]
    service: AttachmentService = app.state.services.files
    return service


async def test_delete_removes_record_and_bytes(chat: ChatClient, tmp_path: Path) -> None:
    kept = await uploaded(chat, "kept.txt", TEXT, "text/plain")
    gone = await uploaded(chat, "gone.png", PNG, "image/png")
    assert await chat.call("attachments.delete", attachment_id=gone["id"]) == {}
    assert stored_files(tmp_path) == {kept["id"]}
    assert_envelope(await describe(chat, gone["id"]), 404, "not_found")
    # Its links stop working at once, long before they expire.
    response = await chat.http.get(gone["preview_url"])
    assert_envelope(response, 403, "forbidden")
    again = await chat.post({"type": "attachments.delete", "params": {"attachment_id": gone["id"]}})
    assert_envelope(again, 404, "not_found")
    # Two-phase, before its bytes came: nothing on disk, and the upload link is dead.
    created = await chat.call("attachments.create", name="a.txt", size=3, mime_type="text/plain")
    await chat.call("attachments.delete", attachment_id=created["id"])
    late = await chat.http.post(
        created["upload_descriptor"]["url"], files={"file": ("a.txt", b"abc", "text/plain")}
    )
    assert_envelope(late, 403, "forbidden")
    assert stored_files(tmp_path) == {kept["id"]}


async def test_deleting_a_thread_deletes_its_attachments(chat: ChatClient, tmp_path: Path) -> None:
    first = await uploaded(chat, "a.png", PNG, "image/png")
    second = await uploaded(chat, "b.txt", TEXT, "text/plain")
    elsewhere = await uploaded(chat, "c.txt", TEXT, "text/plain")
    events = await chat.stream("threads.create", input=message("one", first["id"]))
    thread_id = events[0]["thread"]["id"]
    await chat.stream(
        "threads.add_user_message", thread_id=thread_id, input=message("two", second["id"])
    )
    other, _ = await chat.new_thread("another thread")
    await chat.stream(
        "threads.add_user_message", thread_id=other, input=message("three", elsewhere["id"])
    )
    assert len(stored_files(tmp_path)) == 3

    await chat.call("threads.delete", thread_id=thread_id)
    assert stored_files(tmp_path) == {elsewhere["id"]}
    for attachment_id in (first["id"], second["id"]):
        assert_envelope(await describe(chat, attachment_id), 404, "not_found")
    assert (await describe(chat, elsewhere["id"])).status_code == 200


async def test_an_attachment_belongs_to_one_thread(chat: ChatClient) -> None:
    file = await uploaded(chat, "a.txt", TEXT, "text/plain")
    events = await chat.stream("threads.create", input=message("first", file["id"]))
    thread_id = events[0]["thread"]["id"]
    # Again in the same thread is fine; in another thread it is not.
    await chat.stream(
        "threads.add_user_message", thread_id=thread_id, input=message("again", file["id"])
    )
    response = await chat.post(
        {"type": "threads.create", "params": {"input": message("elsewhere", file["id"])}}
    )
    assert_envelope(response, 400, "invalid_request")
    assert "belongs to another thread" in response.json()["message"]
    twice = await chat.post(
        {"type": "threads.create", "params": {"input": message("x", file["id"], file["id"])}}
    )
    assert_envelope(twice, 400, "invalid_request")
    files = [(await uploaded(chat, f"{n}.txt", TEXT, "text/plain"))["id"] for n in range(11)]
    many = await chat.post({"type": "threads.create", "params": {"input": message("x", *files)}})
    assert_envelope(many, 400, "invalid_request")
    # Attachments alone, with no text, make a message.
    empty = {"content": [], "attachments": files[:1], "inference_options": {}}
    events = await chat.stream("threads.create", input=empty)
    assert events[0]["type"] == "thread.created"


async def _age(chat: ChatClient, attachment_ids: list[str], tmp_path: Path, hours: int) -> None:
    """Make records and their files look `hours` old."""
    service = _service(chat)
    then = datetime.now(UTC) - timedelta(hours=hours)
    async with service.records.engine.begin() as conn:
        await conn.execute(
            update(UNPREFIXED.attachments)
            .where(UNPREFIXED.attachments.c.id.in_(attachment_ids))
            .values(created_at=then)
        )
    for attachment_id in attachment_ids:
        for path in blob_paths(tmp_path, attachment_id):
            os.utime(path, (then.timestamp(), then.timestamp()))


async def test_cleanup_removes_unsent_orphaned_and_partial_files(
    chat: ChatClient, tmp_path: Path
) -> None:
    service = _service(chat)
    sent = await uploaded(chat, "sent.png", PNG, "image/png")
    await chat.stream("threads.create", input=message("keep this", sent["id"]))
    unsent = await uploaded(chat, "unsent.txt", TEXT, "text/plain")
    fresh = await uploaded(chat, "fresh.txt", TEXT, "text/plain")
    pending = await chat.call("attachments.create", name="p.txt", size=3, mime_type="text/plain")
    # Bytes with no record (a crash between the two), and an upload abandoned halfway.
    orphan = "atc_" + "e" * 32
    writer = service.storage.writer(orphan)
    await writer.write(b"stray")
    await writer.commit()
    (tmp_path / "partial").mkdir(exist_ok=True)
    (tmp_path / "partial" / "0123abcd.part").write_bytes(b"half an upload")
    await _age(chat, [sent["id"], unsent["id"], pending["id"], orphan], tmp_path, hours=25)
    old = time.time() - 25 * 3600
    for path in partial_files(tmp_path):
        os.utime(path, (old, old))

    report = await clean_up(service.records, service.storage, timedelta(hours=24))

    assert (report.unsent, report.orphans, report.partial) == (2, 1, 1)
    assert stored_files(tmp_path) == {sent["id"], fresh["id"]}
    assert partial_files(tmp_path) == []
    for attachment_id in (unsent["id"], pending["id"]):
        assert_envelope(await describe(chat, attachment_id), 404, "not_found")
    assert (await describe(chat, fresh["id"])).status_code == 200
    # A second pass finds nothing more.
    report = await clean_up(service.records, service.storage, timedelta(hours=24))
    assert (report.unsent, report.orphans, report.partial) == (0, 0, 0)


async def test_cleanup_on_a_schedule_inside_the_server(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    async with chat_client(
        sqlite_database_url,
        attachments_dir=str(tmp_path),
        attachment_cleanup_interval_seconds=1,
        attachment_unsent_ttl_hours=1,
    ) as chat:
        unsent = await uploaded(chat, "unsent.txt", TEXT, "text/plain")
        await _age(chat, [unsent["id"]], tmp_path, hours=2)
        for _ in range(100):
            if not stored_files(tmp_path):
                break
            await asyncio.sleep(0.05)
        assert stored_files(tmp_path) == set()
        assert_envelope(await describe(chat, unsent["id"]), 404, "not_found")


@pytest.mark.slow
async def test_cleanup_command(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    upgrade_to_head(url)
    files = tmp_path / "attachments"
    async with chat_client(url, attachments_dir=str(files), **NO_SCHEDULE) as chat:
        sent = await uploaded(chat, "sent.txt", TEXT, "text/plain")
        await chat.stream("threads.create", input=message("keep", sent["id"]))
        unsent = await uploaded(chat, "unsent.txt", TEXT, "text/plain")
        await _age(chat, [sent["id"], unsent["id"]], files, hours=48)
    env = {
        "DATABASE_URL": url,
        "ATTACHMENTS_DIR": str(files),
        "ATTACHMENT_UNSENT_TTL_HOURS": "24",
    }
    result = await asyncio.to_thread(run_cli, "cleanup", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"unsent": 1, "orphans": 0, "partial": 0}'
    assert stored_files(files) == {sent["id"]}
