"""The model sees the files: what the real `openai` client sends the (fake) provider.

Responses and Chat Completions, over HTTP against the fake OpenAI server; the offline
model's acknowledgement is in test_attachments_flow.py.
"""

import base64
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from chatkit_backend.attachments.model_input import MAX_INLINE_TEXT_CHARS
from tests.support.attachments import BINARY, PDF, PNG, TEXT, blob_paths, message, uploaded
from tests.support.chat_client import ChatClient, chat_client
from tests.support.fake_openai import FakeOpenAI, Recorded
from tests.support.sse import answer_text

KEY = "sk-test-" + "f1le" * 6
TYPES = "image/png,application/pdf,text/plain,application/zip"


@asynccontextmanager
async def app_on(
    fake: FakeOpenAI,
    database_url: str,
    tmp_path: Path,
    api: str,
    provider: str = "openai",
    **more: Any,
) -> AsyncIterator[ChatClient]:
    settings: dict[str, Any] = more | {
        "llm_provider": provider,
        "llm_api": api,
        "titles": False,
        "attachments_dir": str(tmp_path),
        "allowed_attachment_types": TYPES,
    }
    if provider == "openai":
        settings |= {"openai_api_key": KEY, "openai_base_url": fake.base_url}
    else:
        settings |= {"llm_base_url": fake.base_url}
    async with chat_client(database_url, **settings) as chat:
        yield chat


async def _four_files(chat: ChatClient) -> list[str]:
    files = [
        ("cat.png", PNG, "image/png"),
        ("notes.txt", TEXT, "text/plain"),
        ("report.pdf", PDF, "application/pdf"),
        ("archive.zip", BINARY, "application/zip"),
    ]
    return [(await uploaded(chat, *file))["id"] for file in files]


def _last_user_content(request: Recorded) -> list[dict[str, Any]]:
    [*_, last] = [item for item in request.items if item.get("role") == "user"]
    content: list[dict[str, Any]] = last["content"]
    return content


def _data(url: str, mime_type: str) -> bytes:
    prefix = f"data:{mime_type};base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url.removeprefix(prefix))


async def test_responses_api_gets_image_text_file_and_a_note(
    fake: FakeOpenAI, sqlite_database_url: str, tmp_path: Path
) -> None:
    async with app_on(fake, sqlite_database_url, tmp_path, "responses") as chat:
        ids = await _four_files(chat)
        events = await chat.stream("threads.create", input=message("Look at these", *ids))
    assert answer_text(events) == "Hello from the fake model."
    [request] = fake.requests
    assert request.path == "/v1/responses"
    parts = _last_user_content(request)
    assert [p["type"] for p in parts] == [
        "input_text",  # what the user typed
        "input_text",  # label
        "input_image",
        "input_text",  # label and the text file
        "input_text",  # label
        "input_file",
        "input_text",  # label and note
    ]
    assert parts[0]["text"] == "Look at these"
    assert parts[1]["text"] == 'Attached file "cat.png" (image/png)'
    assert _data(parts[2]["image_url"], "image/png") == PNG
    assert parts[3]["text"] == f'Attached file "notes.txt" (text/plain):\n{TEXT.decode()}'
    assert parts[4]["text"] == 'Attached file "report.pdf" (application/pdf)'
    assert parts[5]["filename"] == "report.pdf"
    assert _data(parts[5]["file_data"], "application/pdf") == PDF
    assert parts[6]["text"] == (
        'Attached file "archive.zip" (application/zip): its content cannot be shown to this model.'
    )


async def test_chat_completions_get_image_url_and_text_pdf_as_a_note_locally(
    fake: FakeOpenAI, sqlite_database_url: str, tmp_path: Path
) -> None:
    async with app_on(
        fake, sqlite_database_url, tmp_path, "chat_completions", "openai-compatible"
    ) as chat:
        ids = await _four_files(chat)
        events = await chat.stream("threads.create", input=message("Look", *ids))
    assert answer_text(events) == "Hello from the fake model."
    [request] = fake.requests
    assert request.path == "/v1/chat/completions"
    parts = _last_user_content(request)
    assert [p["type"] for p in parts] == ["text", "text", "image_url", "text", "text", "text"]
    assert _data(parts[2]["image_url"]["url"], "image/png") == PNG
    assert parts[3]["text"].endswith(TEXT.decode())
    # A local server reads no PDF: the model is told the file is there and unreadable.
    assert parts[4]["text"].startswith('Attached file "report.pdf" (application/pdf): its content')
    assert parts[5]["text"].startswith('Attached file "archive.zip" (application/zip): its')


async def test_openai_on_chat_completions_gets_the_pdf_as_a_file(
    fake: FakeOpenAI, sqlite_database_url: str, tmp_path: Path
) -> None:
    async with app_on(fake, sqlite_database_url, tmp_path, "chat_completions") as chat:
        pdf = await uploaded(chat, "report.pdf", PDF, "application/pdf")
        await chat.stream("threads.create", input=message("Summarise", pdf["id"]))
    parts = _last_user_content(fake.requests[0])
    assert [p["type"] for p in parts] == ["text", "text", "file"]
    assert parts[2]["file"]["filename"] == "report.pdf"
    assert _data(parts[2]["file"]["file_data"], "application/pdf") == PDF


async def test_long_text_is_cut_and_says_so_and_history_keeps_files(
    fake: FakeOpenAI, sqlite_database_url: str, tmp_path: Path
) -> None:
    long_text = ("x" * 99 + "\n") * (MAX_INLINE_TEXT_CHARS // 50)
    async with app_on(fake, sqlite_database_url, tmp_path, "responses") as chat:
        text = await uploaded(chat, "big.txt", long_text.encode(), "text/plain")
        image = await uploaded(chat, "cat.png", PNG, "image/png")
        events = await chat.stream("threads.create", input=message("Read", text["id"], image["id"]))
        thread_id = events[0]["thread"]["id"]
        # The image's bytes vanish from disk (an operator's mistake): the next turn still
        # works, and the model is told.
        for path in blob_paths(tmp_path, image["id"]):
            path.unlink()
        await chat.stream("threads.add_user_message", thread_id=thread_id, input=message("More?"))
    first = _last_user_content(fake.requests[0])[1]["text"]
    heading = f'Attached file "big.txt" (text/plain), only its first {MAX_INLINE_TEXT_CHARS:,}'
    assert first.startswith(heading)
    assert len(first) < MAX_INLINE_TEXT_CHARS + 200
    history = [item for item in fake.requests[1].items if item.get("role") == "user"]
    earlier = history[0]["content"]
    assert earlier[1]["text"].startswith('Attached file "big.txt"')
    assert earlier[2]["text"] == (
        'Attached file "cat.png" (image/png): the file is no longer available.'
    )


async def test_a_long_text_file_does_not_trip_the_message_guardrail(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    async with chat_client(
        sqlite_database_url, attachments_dir=str(tmp_path), input_guardrail_max_chars=100
    ) as chat:
        notes = await uploaded(chat, "long.txt", b"word " * 1000, "text/plain")
        events = await chat.stream("threads.create", input=message("Short question", notes["id"]))
    assert "I received 1 attachment: long.txt (text/plain)." in answer_text(events)


# ---- the budget for files of earlier messages ----


def noise_png(side: int) -> bytes:
    """A valid PNG of random grey pixels: about side * side bytes, as noise will not compress."""
    buffer = io.BytesIO()
    Image.frombytes("L", (side, side), os.urandom(side * side)).save(buffer, "PNG")
    return buffer.getvalue()


def _sent(parts: list[dict[str, Any]]) -> tuple[list[bytes], list[bytes]]:
    """The bytes of the image parts and of the file parts (Responses API)."""
    images = [_data(p["image_url"], "image/png") for p in parts if p["type"] == "input_image"]
    files = [_data(p["file_data"], "application/pdf") for p in parts if p["type"] == "input_file"]
    return images, files


def _all_user_parts(request: Recorded) -> list[dict[str, Any]]:
    return [p for item in request.items if item.get("role") == "user" for p in item["content"]]


async def _thread_of(chat: ChatClient, *messages: list[tuple[str, bytes, str]]) -> None:
    """One thread, one message per list of (name, bytes, type) files."""
    thread_id = None
    for number, files in enumerate(messages):
        ids = [(await uploaded(chat, *file))["id"] for file in files]
        body = message(f"Message {number}", *ids)
        if thread_id is None:
            events = await chat.stream("threads.create", input=body)
            thread_id = events[0]["thread"]["id"]
        else:
            await chat.stream("threads.add_user_message", thread_id=thread_id, input=body)


async def test_only_the_newest_files_are_sent_again_the_rest_by_label(
    fake: FakeOpenAI, sqlite_database_url: str, tmp_path: Path
) -> None:
    a, b, c, d = (noise_png(40 + n) for n in range(4))
    async with app_on(fake, sqlite_database_url, tmp_path, "responses") as chat:
        await _thread_of(
            chat,
            [("a.png", a, "image/png"), ("b.png", b, "image/png")],
            [("c.png", c, "image/png"), ("report.pdf", PDF, "application/pdf")],
            [("d.png", d, "image/png")],
        )
    last = fake.requests[-1]
    images, files = _sent(_all_user_parts(last))
    # MODEL_ATTACHMENTS_WHOLE=3 by default: the file being answered and the newest two.
    assert sorted(images) == sorted([c, d])
    assert files == [PDF]
    texts = [p["text"] for p in _all_user_parts(last) if p["type"] == "input_text"]
    for name, data in (("a.png", a), ("b.png", b)):
        shown = f"{len(data) / 1000:.1f} kB"
        assert f'Attached file "{name}" (image/png): {shown}, shared earlier; not sent again.' in (
            texts
        )
    # The first turn, with nothing earlier, sent both of its files.
    assert len(_sent(_all_user_parts(fake.requests[0]))[0]) == 2


async def test_earlier_files_stop_at_the_byte_budget(
    fake: FakeOpenAI, sqlite_database_url: str, tmp_path: Path
) -> None:
    one, two, three, four = (noise_png(170 + n) for n in range(4))  # about 30 kB each
    budget = len(four) + len(three) + len(two) - 1  # the oldest two cannot both fit
    async with app_on(
        fake,
        sqlite_database_url,
        tmp_path,
        "responses",
        model_attachments_whole=10,
        model_attachment_bytes=budget,
    ) as chat:
        await _thread_of(
            chat,
            [("one.png", one, "image/png")],
            [("two.png", two, "image/png"), ("three.png", three, "image/png")],
            [("four.png", four, "image/png")],
        )
    images, _ = _sent(_all_user_parts(fake.requests[-1]))
    assert sorted(images) == sorted([three, four])
    assert sum(len(image) for image in images) <= budget
    texts = [p["text"] for p in _all_user_parts(fake.requests[-1]) if p["type"] == "input_text"]
    assert sum("not sent again" in text for text in texts) == 2


async def test_the_files_being_answered_go_whole_whatever_the_budget(
    fake: FakeOpenAI, sqlite_database_url: str, tmp_path: Path
) -> None:
    first, second, third = (noise_png(60 + n) for n in range(3))
    async with app_on(
        fake,
        sqlite_database_url,
        tmp_path,
        "responses",
        model_attachments_whole=0,
        model_attachment_bytes=0,
    ) as chat:
        await _thread_of(
            chat,
            [("first.png", first, "image/png")],
            [("second.png", second, "image/png"), ("third.png", third, "image/png")],
        )
    images, _ = _sent(_all_user_parts(fake.requests[-1]))
    assert sorted(images) == sorted([second, third])
    assert _sent(_last_user_content(fake.requests[-1]))[0] == [second, third]
