"""The model sees the files: what the real `openai` client sends the (fake) provider.

Responses and Chat Completions, over HTTP against the fake OpenAI server; the offline
model's acknowledgement is in test_attachments_flow.py.
"""

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from chatkit_backend.attachments.model_input import MAX_INLINE_TEXT_CHARS
from tests.support.attachments import BINARY, PDF, PNG, TEXT, blob_paths, message, uploaded
from tests.support.chat_client import ChatClient, chat_client
from tests.support.fake_openai import FakeOpenAI, Recorded
from tests.support.sse import answer_text

KEY = "sk-test-" + "f1le" * 6
TYPES = "image/png,application/pdf,text/plain,application/zip"


@asynccontextmanager
async def app_on(
    fake: FakeOpenAI, database_url: str, tmp_path: Path, api: str, provider: str = "openai"
) -> AsyncIterator[ChatClient]:
    settings: dict[str, Any] = {
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
