"""What one user may keep and how fast they may upload: per-user quotas counted in the
database, a separate upload rate, and the cleanup on by default.

Over HTTP through the app, on SQLite and PostgreSQL (the `database_url` fixture). Each
refusal is the JSON envelope, says what to do, and leaves every stored file as it was.
"""

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import update

from chatkit_backend.attachments.cleanup import CLEANUP_TASK
from chatkit_backend.settings import Settings
from chatkit_backend.store.tables import UNPREFIXED
from tests.support.attachments import (
    describe,
    message,
    partial_files,
    stored_files,
    upload,
    uploaded,
)
from tests.support.chat_client import ChatClient, assert_envelope, local_app

# Small enough to reach in a few uploads.
QUOTAS: dict[str, Any] = {
    "max_attachment_bytes": 1000,
    "attachment_quota_unsent_count": 3,
    "attachment_quota_unsent_bytes": 2000,
    "attachment_quota_total_bytes": 3000,
    "attachment_uploads_per_minute": 1000,
}


def text(size: int) -> bytes:
    return b"a" * size


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return tmp_path / "attachments"


@pytest.fixture
async def chat(database_url: str, files: Path) -> AsyncIterator[ChatClient]:
    async with local_app(database_url, attachments_dir=str(files), **QUOTAS) as (_, http):
        yield ChatClient(http)


async def put(chat: ChatClient, size: int) -> dict[str, Any]:
    """A direct upload of `size` bytes that must succeed."""
    return await uploaded(chat, f"{size}.txt", text(size), "text/plain")


async def create(chat: ChatClient, size: int) -> httpx.Response:
    params = {"name": f"{size}.txt", "size": size, "mime_type": "text/plain"}
    return await chat.post({"type": "attachments.create", "params": params})


async def send(chat: ChatClient, *attachments: dict[str, Any]) -> str:
    """A new thread whose first message carries `attachments`; returns its id."""
    events = await chat.stream(
        "threads.create", input=message("see", *(a["id"] for a in attachments))
    )
    thread_id: str = events[0]["thread"]["id"]
    return thread_id


async def assert_intact(chat: ChatClient, kept: list[dict[str, Any]], files: Path) -> None:
    """Exactly `kept` is stored, whole, and nothing half-written is left."""
    assert stored_files(files) == {a["id"] for a in kept}
    assert partial_files(files) == []
    for attachment in kept:
        described = await describe(chat, attachment["id"])
        assert described.status_code == 200, described.text
        content = await chat.http.get(described.json()["content_url"])
        assert content.content == text(int(attachment["name"].removesuffix(".txt")))


def assert_quota(response: httpx.Response, status: int, *words: str) -> None:
    assert_envelope(response, status, "quota_exceeded")
    said = response.json()["message"]
    assert all(word in said for word in words), said


# ---- the number of unsent attachments ----


async def test_too_many_unsent_is_429_until_one_is_sent_or_deleted(
    chat: ChatClient, files: Path
) -> None:
    kept = [await put(chat, 10), await put(chat, 20)]
    pending = (await create(chat, 30)).json()  # two-phase, bytes still to come: counted
    assert pending["upload_descriptor"]

    refused = await upload(chat.http, "40.txt", text(40), "text/plain")
    assert_quota(refused, 429, "3 attachments not yet sent", "send them or delete some")
    assert_quota(await create(chat, 40), 429, "not yet sent")
    await assert_intact(chat, kept, files)

    # Deleting one frees a place; the place is taken again at once.
    await chat.call("attachments.delete", attachment_id=pending["id"])
    kept.append(await put(chat, 40))
    assert_quota(await create(chat, 50), 429, "not yet sent")
    # Sending frees places too: a sent attachment is no longer unsent.
    await send(chat, kept[0], kept[1])
    kept += [await put(chat, 50), await put(chat, 60)]
    assert_quota(await upload(chat.http, "70.txt", text(70), "text/plain"), 429, "not yet sent")
    await assert_intact(chat, kept, files)


# ---- bytes not yet sent ----


async def test_unsent_bytes_over_the_quota_are_413(chat: ChatClient, files: Path) -> None:
    kept = [await put(chat, 1000)]
    # Two-phase: the declared size is held from `attachments.create` on.
    pending = (await create(chat, 900)).json()

    # Direct: the size shows only as the bytes arrive; refused once past the room.
    refused = await upload(chat.http, "101.txt", text(101), "text/plain")
    assert_quota(refused, 413, "not yet sent in a message would pass 1.95 KiB", "1.86 KiB in use")
    # Two-phase: refused at `attachments.create`, from the declared size.
    assert_quota(await create(chat, 101), 413, "send them or delete some")
    await assert_intact(chat, kept, files)

    url = pending["upload_descriptor"]["url"]
    assert (await upload(chat.http, "900.txt", text(900), "text/plain", url)).status_code == 200
    kept.append(pending)
    assert (await create(chat, 100)).status_code == 200  # what fits exactly is taken
    await send(chat, kept[0])  # sending frees its 1000 bytes
    kept.append(await put(chat, 1000))
    await assert_intact(chat, kept, files)


async def test_a_two_phase_upload_whose_link_expired_holds_no_room(
    database_url: str, files: Path
) -> None:
    async with local_app(database_url, attachments_dir=str(files), **QUOTAS) as (app, http):
        chat = ChatClient(http)
        stale = [(await create(chat, 1000)).json(), (await create(chat, 1000)).json()]
        assert_quota(await create(chat, 1), 413, "in use")
        # Past ATTACHMENT_UPLOAD_TTL_SECONDS their bytes can never arrive.
        services = app.state.services
        ttl = timedelta(seconds=services.settings.attachment_upload_ttl_seconds + 5)
        async with services.engine.begin() as conn:
            await conn.execute(
                update(UNPREFIXED.attachments)
                .where(UNPREFIXED.attachments.c.id.in_([a["id"] for a in stale]))
                .values(created_at=datetime.now(UTC) - ttl)
            )
        await assert_intact(chat, [await put(chat, 1000)], files)


# ---- everything kept ----


async def test_total_bytes_over_the_quota_are_413_until_threads_are_deleted(
    chat: ChatClient, files: Path
) -> None:
    first = [await put(chat, 1000), await put(chat, 1000)]
    thread_id = await send(chat, *first)
    last = await put(chat, 900)
    await send(chat, last)  # 2900 of 3000 bytes kept, none unsent

    refused = await upload(chat.http, "101.txt", text(101), "text/plain")
    assert_quota(
        refused, 413, "would pass your 2.93 KiB of storage", "delete attachments or threads"
    )
    assert_quota(await create(chat, 101), 413, "of storage")
    await assert_intact(chat, [*first, last], files)

    await chat.call("threads.delete", thread_id=thread_id)
    kept = [last, await put(chat, 1000)]
    await assert_intact(chat, kept, files)


# ---- across workers ----


async def test_the_quota_holds_across_workers(database_url: str, files: Path) -> None:
    # Two apps with engines and limiters of their own, like two workers, one user.
    user = f"user_{secrets.token_hex(6)}"
    options = {**QUOTAS, "attachments_dir": str(files), "local_user_id": user}
    async with (
        local_app(database_url, **options) as (_, one),
        local_app(database_url, **options) as (_, two),
    ):
        for http in (one, two):
            response = await upload(http, "10.txt", text(10), "text/plain")
            assert response.status_code == 200, response.text
        # One place left, and six uploads at once through both: exactly one gets it.
        answers = await asyncio.gather(
            *(upload(http, "10.txt", text(10), "text/plain") for http in (one, two) * 3)
        )
        assert sorted(response.status_code for response in answers) == [200] + [429] * 5
        for response in answers:
            if response.status_code != 200:
                assert_quota(response, 429, "not yet sent")
        assert len(stored_files(files)) == 3
        assert partial_files(files) == []


# ---- the upload rate ----


async def test_uploads_have_a_rate_of_their_own(sqlite_database_url: str, files: Path) -> None:
    options = {**QUOTAS, "attachment_uploads_per_minute": 2, "attachments_dir": str(files)}
    async with local_app(sqlite_database_url, **options) as (_, http):
        chat = ChatClient(http)
        kept = [await put(chat, 10)]
        assert (await create(chat, 20)).status_code == 200  # two-phase counts too
        for refused in (
            await upload(http, "30.txt", text(30), "text/plain"),
            await create(chat, 30),
        ):
            assert_envelope(refused, 429, "rate_limited")
            assert "Too many uploads: at most 2 a minute" in refused.json()["message"]
            assert 1 <= int(refused.headers["retry-after"]) <= 30
        # Other requests are not uploads: still answered.
        assert (await chat.call("threads.list"))["data"] == []
        await assert_intact(chat, kept, files)


# ---- settings and the cleanup ----


def test_quota_defaults_and_their_checks() -> None:
    settings = Settings(_env_file=None)
    assert settings.attachment_quota_unsent_count == 20
    assert settings.attachment_quota_unsent_bytes == 100 * 1024 * 1024
    assert settings.attachment_quota_total_bytes == 1024**3
    assert settings.attachment_uploads_per_minute == 20
    for setting in ("attachment_quota_unsent_bytes", "attachment_quota_total_bytes"):
        with pytest.raises(ValidationError) as raised:
            Settings(_env_file=None, max_attachment_bytes=5000, **{setting: 4999})
        [error] = raised.value.errors()
        assert f"{setting.upper()} must be at least MAX_ATTACHMENT_BYTES" in error["msg"]
        assert "4999" not in error["msg"]  # the message names the setting, not its value


def _cleanup_loops() -> int:
    return sum(task.get_name() == CLEANUP_TASK and not task.done() for task in asyncio.all_tasks())


async def test_the_cleanup_runs_in_the_server_by_default(
    sqlite_database_url: str, files: Path
) -> None:
    assert Settings(_env_file=None).attachment_cleanup_interval_seconds == 600
    async with local_app(sqlite_database_url, attachments_dir=str(files)):
        assert _cleanup_loops() == 1
    assert _cleanup_loops() == 0
    # 0 still turns it off (cron runs `chatkit-backend cleanup` instead).
    options = {"attachments_dir": str(files), "attachment_cleanup_interval_seconds": 0}
    async with local_app(sqlite_database_url, **options):
        assert _cleanup_loops() == 0
