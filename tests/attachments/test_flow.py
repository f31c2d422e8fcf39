"""Both upload strategies end to end over HTTP, a message that uses the files, then the
content and preview links; on SQLite and PostgreSQL (the `database_url` fixture)."""

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.attachments import (
    PDF,
    PNG,
    TEXT,
    content_url,
    describe,
    message,
    stored_files,
    two_phase,
    upload,
    uploaded,
)
from tests.support.chat_client import ChatClient, chat_client
from tests.support.sse import answer_text


@pytest.fixture
def attachments_dir(tmp_path: Path) -> Path:
    return tmp_path / "attachments"


@pytest.fixture
async def chat(database_url: str, attachments_dir: Path) -> AsyncIterator[ChatClient]:
    async with chat_client(database_url, attachments_dir=str(attachments_dir)) as client:
        yield client


def _signed_link(url: str, attachment_id: str, kind: str) -> None:
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("http", "localhost")  # absolute
    assert parts.path == f"/chatkit/attachments/{attachment_id}/{kind}"
    query = parse_qs(parts.query)
    assert set(query) == {"exp", "sig"}
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["sig"][0])


def _user_message(events: list[dict[str, Any]]) -> dict[str, Any]:
    [item] = [
        e["item"]
        for e in events
        if e["type"] == "thread.item.done" and e["item"]["type"] == "user_message"
    ]
    return item


async def test_direct_upload_message_and_links(chat: ChatClient, attachments_dir: Path) -> None:
    image = await uploaded(chat, "cat.png", PNG, "image/png")
    notes = await uploaded(chat, "notes.txt", TEXT, "text/plain")

    assert image["type"] == "image" and image["mime_type"] == "image/png"
    assert image["name"] == "cat.png" and image["id"].startswith("atc_")
    assert "upload_descriptor" not in image and "metadata" not in image
    _signed_link(image["preview_url"], image["id"], "preview")
    assert notes["type"] == "file" and notes["mime_type"] == "text/plain"
    assert "preview_url" not in notes
    assert stored_files(attachments_dir) == {image["id"], notes["id"]}

    events = await chat.stream(
        "threads.create", input=message("What is in these?", image["id"], notes["id"])
    )
    thread_id = events[0]["thread"]["id"]
    sent = _user_message(events)
    assert [a["id"] for a in sent["attachments"]] == [image["id"], notes["id"]]
    assert all(a["thread_id"] == thread_id for a in sent["attachments"])
    assert "I received 2 attachments: cat.png (image/png), notes.txt (text/plain)." in answer_text(
        events
    )
    assert 'You said: "What is in these?"' in answer_text(events)

    # The preview as the page's <img> fetches it: no token, the link is the permission.
    preview = await chat.http.get(sent["attachments"][0]["preview_url"], headers={})
    assert preview.status_code == 200
    # A WebP made from the image, at most 512 px (test_previews.py has the details).
    assert preview.content.startswith(b"RIFF")
    assert preview.headers["content-type"] == "image/webp"
    assert preview.headers["content-disposition"].startswith('inline; filename="cat.webp"')
    assert preview.headers["x-content-type-options"] == "nosniff"
    assert preview.headers["cache-control"].startswith("private, max-age=")

    url = await content_url(chat, notes["id"])
    _signed_link(url, notes["id"], "content")
    download = await chat.http.get(url)
    assert download.status_code == 200 and download.content == TEXT
    assert download.headers["content-type"] == "text/plain; charset=utf-8"
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    )
    assert download.headers["content-length"] == str(len(TEXT))
    assert "sandbox" in download.headers["content-security-policy"]

    # Reloading the thread later: the stored preview link is re-signed and still works.
    [first, _] = await chat.items(thread_id)
    reloaded = first["attachments"][0]["preview_url"]
    _signed_link(reloaded, image["id"], "preview")
    assert (await chat.http.get(reloaded)).content == preview.content

    # A second message in the thread: the model still gets the earlier files as history,
    # and this message's own attachments are what it acknowledges.
    more = await uploaded(chat, "more.md", b"# Notes\n", "text/markdown")
    events = await chat.stream(
        "threads.add_user_message", thread_id=thread_id, input=message("and this", more["id"])
    )
    assert "I received 1 attachment: more.md (text/markdown)." in answer_text(events)


async def test_two_phase_upload_then_message(chat: ChatClient, attachments_dir: Path) -> None:
    created = await chat.call(
        "attachments.create", name="report.pdf", size=len(PDF), mime_type="application/pdf"
    )
    assert created["type"] == "file" and created["name"] == "report.pdf"
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "POST"
    _signed_link(descriptor["url"], created["id"], "upload")
    assert stored_files(attachments_dir) == set()

    # Until the bytes arrive it cannot be sent, and it has nothing to serve.
    early = await chat.post(
        {"type": "threads.create", "params": {"input": message("see", created["id"])}}
    )
    assert early.status_code == 400
    assert "has not finished uploading" in early.json()["message"]
    status = await describe(chat, created["id"])
    assert status.json()["uploaded"] is False and status.json()["content_url"] is None

    response = await upload(chat.http, "report.pdf", PDF, "application/pdf", descriptor["url"])
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["id"] == created["id"] and "upload_descriptor" not in done
    assert stored_files(attachments_dir) == {created["id"]}

    again = await upload(chat.http, "report.pdf", PDF, "application/pdf", descriptor["url"])
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"

    events = await chat.stream("threads.create", input=message("Summarise", created["id"]))
    assert "I received 1 attachment: report.pdf (application/pdf)." in answer_text(events)
    download = await chat.http.get(await content_url(chat, created["id"]))
    assert download.content == PDF
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"].startswith("attachment;")


async def test_two_phase_image_gets_a_preview(chat: ChatClient) -> None:
    image = await two_phase(chat, "photo.png", PNG, "image/png")
    assert image["type"] == "image"
    _signed_link(image["preview_url"], image["id"], "preview")
    preview = await chat.http.get(image["preview_url"])
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/webp"


async def test_public_url_makes_the_links(database_url: str, tmp_path: Path) -> None:
    async with chat_client(
        database_url,
        attachments_dir=str(tmp_path),
        public_url="https://chat.example.com/api/",
    ) as chat:
        image = await uploaded(chat, "cat.png", PNG, "image/png")
        created = await chat.call(
            "attachments.create", name="a.txt", size=3, mime_type="text/plain"
        )
    preview = urlsplit(image["preview_url"])
    assert (preview.scheme, preview.netloc) == ("https", "chat.example.com")
    assert preview.path == f"/api/chatkit/attachments/{image['id']}/preview"
    assert created["upload_descriptor"]["url"].startswith(
        f"https://chat.example.com/api/chatkit/attachments/{created['id']}/upload?"
    )
