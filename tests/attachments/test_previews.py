"""Image previews: a small WebP made once, kept beside the file, deleted with it.

Over HTTP (the app in process); the files on disk are checked where they are kept.
"""

import io
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image

from chatkit_backend.attachments.content import PREVIEW_MAX_SIDE
from chatkit_backend.attachments.storage import LocalDiskStorage
from tests.support.attachments import (
    PNG,
    blob_paths,
    content_url,
    message,
    stored_files,
    uploaded,
)
from tests.support.chat_client import ChatClient, assert_envelope, chat_client


@pytest.fixture
async def chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatClient]:
    async with chat_client(database_url, attachments_dir=str(tmp_path)) as client:
        yield client


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def photo(width: int, height: int) -> bytes:
    """A PNG that compresses as badly as a photo does: grey noise, a few MB at 2000 px."""
    return encoded(Image.effect_noise((width, height), 40), "PNG")


def preview_paths(attachments_dir: Path, attachment_id: str) -> list[Path]:
    return list(attachments_dir.glob(f"blobs/*/{attachment_id}.preview"))


def kept_files(attachments_dir: Path) -> list[Path]:
    """Every file under the blobs, previews included."""
    return list(attachments_dir.glob("blobs/*/*"))


def opened(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["content-length"] == str(len(response.content))
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "WEBP"
    return image


async def test_a_large_image_previews_small_and_is_made_once(
    chat: ChatClient, tmp_path: Path
) -> None:
    original = photo(2000, 1500)
    image = await uploaded(chat, "big.png", original, "image/png")
    assert preview_paths(tmp_path, image["id"]) == []

    first = await chat.http.get(image["preview_url"])
    assert opened(first).size == (PREVIEW_MAX_SIDE, 384)  # the long side, ratio kept
    assert len(first.content) <= 100_000 < len(original) // 20
    assert first.headers["content-disposition"].startswith('inline; filename="big.webp"')
    assert first.headers["x-content-type-options"] == "nosniff"
    assert first.headers["cache-control"].startswith("private, max-age=")
    [kept] = preview_paths(tmp_path, image["id"])
    made = kept.stat().st_mtime_ns

    # The original's bytes vanish: the preview is served from where it is kept, not
    # made again (which would now fail).
    for path in blob_paths(tmp_path, image["id"]):
        path.unlink()
    second = await chat.http.get(image["preview_url"])
    assert second.content == first.content
    assert kept.stat().st_mtime_ns == made


async def test_deleting_the_attachment_or_its_thread_deletes_the_preview(
    chat: ChatClient, tmp_path: Path
) -> None:
    alone = await uploaded(chat, "alone.png", photo(700, 500), "image/png")
    sent = await uploaded(chat, "sent.png", photo(600, 600), "image/png")
    events = await chat.stream("threads.create", input=message("Look", sent["id"]))
    for image in (alone, sent):
        opened(await chat.http.get(image["preview_url"]))
        assert len(preview_paths(tmp_path, image["id"])) == 1

    assert await chat.call("attachments.delete", attachment_id=alone["id"]) == {}
    assert preview_paths(tmp_path, alone["id"]) == []
    await chat.call("threads.delete", thread_id=events[0]["thread"]["id"])
    assert preview_paths(tmp_path, sent["id"]) == []
    assert stored_files(tmp_path) == set()
    assert kept_files(tmp_path) == []


async def test_an_image_pillow_cannot_read_is_a_clean_415(chat: ChatClient, tmp_path: Path) -> None:
    # PNG by its first bytes (so the upload takes it), nothing after them.
    broken = PNG[:16] + b"\x00garbage" * 100
    image = await uploaded(chat, "broken.png", broken, "image/png")
    response = await chat.http.get(image["preview_url"])
    assert_envelope(response, 415, "unsupported_media_type")
    assert response.json()["message"] == "This image cannot be read, so it has no preview"
    assert "Traceback" not in response.text
    # Nothing is lost: the file itself is still there, and no preview was kept.
    assert (await chat.http.get(await content_url(chat, image["id"]))).content == broken
    assert preview_paths(tmp_path, image["id"]) == []


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def huge_canvas(width: int, height: int) -> bytes:
    """A tiny PNG that declares an enormous image: decoding it would take gigabytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        # Over this server's limit, under Pillow's own.
        (8000, 6000, "This image is too large to make a preview of"),
        # Over Pillow's decompression-bomb limit.
        (60_000, 60_000, "This image cannot be read, so it has no preview"),
    ],
)
async def test_a_decompression_bomb_is_refused_before_decoding(
    sqlite_database_url: str, tmp_path: Path, width: int, height: int, message: str
) -> None:
    async with chat_client(sqlite_database_url, attachments_dir=str(tmp_path)) as chat:
        image = await uploaded(chat, "bomb.png", huge_canvas(width, height), "image/png")
        response = await chat.http.get(image["preview_url"])
    assert_envelope(response, 415, "unsupported_media_type")
    assert response.json()["message"] == message


async def test_an_animated_gif_previews_as_its_first_frame(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    frames = [Image.new("RGB", (120, 80), colour) for colour in colours]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    async with chat_client(sqlite_database_url, attachments_dir=str(tmp_path)) as chat:
        image = await uploaded(chat, "blink.gif", gif, "image/gif")
        preview = opened(await chat.http.get(image["preview_url"]))
    assert preview.size == (120, 80)  # small images are not enlarged
    assert getattr(preview, "n_frames", 1) == 1
    red, green, blue = preview.convert("RGB").getpixel((60, 40))  # type: ignore[misc]
    assert red > 150 and green < 80 and blue < 80


async def test_a_stray_preview_is_swept_as_an_orphan(tmp_path: Path) -> None:
    # Saved while its attachment was being deleted: the cleanup's walk names its key.
    storage = LocalDiskStorage(tmp_path)
    await storage.save_preview("atc_gone", b"webp")
    later = datetime.now(UTC) + timedelta(hours=1)
    assert [key async for key in storage.keys_older_than(later)] == ["atc_gone"]
    await storage.delete("atc_gone")
    assert kept_files(tmp_path) == []
    assert await storage.read_preview("atc_gone") is None
