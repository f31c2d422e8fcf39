"""Sample files and small helpers for the attachment tests: uploads over real HTTP."""

import struct
import zlib
from pathlib import Path
from typing import Any

import httpx

from tests.support.chat_client import ChatClient

UPLOAD_URL = "/chatkit/attachments"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png(width: int = 1, height: int = 1, rgb: tuple[int, int, int] | None = None) -> bytes:
    """A valid, small PNG, made here rather than shipped: grey, or solid `rgb`."""
    colour_type, pixel = (0, b"\x80") if rgb is None else (2, bytes(rgb))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    rows = b"".join(b"\x00" + pixel * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


PNG = png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00" + b"\x00" * 24
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
TEXT = "Buy milk.\nCall Ada about the Ünïcode report.\n".encode()
BINARY = bytes(range(256)) * 4


async def upload(
    http: httpx.AsyncClient,
    name: str,
    data: bytes,
    content_type: str,
    url: str = UPLOAD_URL,
) -> httpx.Response:
    """POST a multipart body with `data` in the `file` field, as the ChatKit client does."""
    return await http.post(url, files={"file": (name, data, content_type)})


async def uploaded(chat: ChatClient, name: str, data: bytes, content_type: str) -> dict[str, Any]:
    """A direct upload that must succeed; returns the `Attachment` JSON."""
    response = await upload(chat.http, name, data, content_type)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    attachment: dict[str, Any] = response.json()
    return attachment


async def two_phase(
    chat: ChatClient,
    name: str,
    data: bytes,
    mime_type: str,
    uploader: httpx.AsyncClient | None = None,
) -> dict[str, Any]:
    """`attachments.create`, then the bytes to its upload URL (by `uploader`, e.g. a
    client with no token); returns the uploaded `Attachment`."""
    created = await chat.call("attachments.create", name=name, size=len(data), mime_type=mime_type)
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "POST"
    response = await upload(uploader or chat.http, name, data, mime_type, descriptor["url"])
    assert response.status_code == 200, response.text
    attachment: dict[str, Any] = response.json()
    return attachment


def message(text: str, *attachment_ids: str) -> dict[str, Any]:
    """A `UserMessageInput` carrying attachments."""
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": list(attachment_ids),
        "inference_options": {},
    }


async def describe(chat: ChatClient, attachment_id: str) -> httpx.Response:
    return await chat.http.get(f"{UPLOAD_URL}/{attachment_id}")


async def content_url(chat: ChatClient, attachment_id: str) -> str:
    response = await describe(chat, attachment_id)
    assert response.status_code == 200, response.text
    url: str = response.json()["content_url"]
    return url


def stored_files(attachments_dir: Path) -> set[str]:
    """The blob keys on disk (the attachment ids whose bytes are stored)."""
    blobs = attachments_dir / "blobs"
    return {path.name for path in blobs.glob("*/*")} if blobs.exists() else set()


def partial_files(attachments_dir: Path) -> list[Path]:
    partial = attachments_dir / "partial"
    return list(partial.iterdir()) if partial.exists() else []


def blob_paths(attachments_dir: Path, attachment_id: str) -> list[Path]:
    """Where an attachment's bytes are on disk (none once deleted)."""
    return list(attachments_dir.glob(f"blobs/*/{attachment_id}"))
