"""The attachment package's parts on their own: sniffing, types, names, keys, disk."""

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatkit_backend.attachments import content as media_types
from chatkit_backend.attachments import content as sniffing
from chatkit_backend.attachments.content import safe_name
from chatkit_backend.attachments.links import LinkSigner, signing_key
from chatkit_backend.attachments.model_input import last_user_attachments, last_user_text
from chatkit_backend.attachments.storage import BlobExists, BlobMissing, LocalDiskStorage
from chatkit_backend.context import Owner
from chatkit_backend.errors import UnsupportedMediaType
from chatkit_backend.providers.offline_script import offline_answer
from chatkit_backend.settings import Settings
from tests.support.attachments import BINARY, GIF, JPEG, PDF, PNG, TEXT, WEBP

ALLOWED = frozenset(Settings(_env_file=None).allowed_attachment_types)  # type: ignore[call-arg]


def sniff(data: bytes, chunk: int = 3) -> str:
    sniffer = sniffing.ContentSniffer()
    for start in range(0, len(data), chunk):
        sniffer.feed(data[start : start + chunk])
    return sniffer.result()


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF, "image/gif"),
        (WEBP, "image/webp"),
        (PDF, "application/pdf"),
        (TEXT, "text"),
        ("naïve 日本語 🎉\r\n\tx\x1b[0m".encode(), "text"),
        (b"\xef\xbb\xbfwith a BOM", "text"),
        (BINARY, "unknown"),
        (b"text then a NUL\x00", "unknown"),
        ("ends mid-character é".encode()[:-1], "unknown"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "unknown"),  # RIFF, but not WebP
    ],
)
def test_sniffing_in_small_chunks(data: bytes, found: str) -> None:
    assert sniff(data) == found
    assert sniff(data, chunk=1) == found


def test_claims_and_verification() -> None:
    assert media_types.claimed_type("Text/Plain; charset=utf-8", "a.txt") == "text/plain"
    assert media_types.claimed_type("", "notes.md") == "text/markdown"
    assert media_types.claimed_type("video/mp2t", "app.ts") == "text/x-typescript"
    assert media_types.claimed_type("image/png", "cat.py") == "text/x-python"  # then refused
    assert media_types.accepted_claim("text/x-python", ALLOWED) == "text/plain"
    with pytest.raises(UnsupportedMediaType):
        media_types.accepted_claim("image/svg+xml", ALLOWED)
    assert media_types.verified_type("image/png", "image/jpeg", ALLOWED) == "image/png"
    assert media_types.verified_type("text", "text/csv", ALLOWED) == "text/csv"
    for content, claim in (("text", "image/png"), ("image/png", "text/plain"), ("unknown", "")):
        with pytest.raises(UnsupportedMediaType):
            media_types.verified_type(content, claim, ALLOWED)
    # An operator may allow a type this server cannot recognise; it must not pose as text.
    zip_too = ALLOWED | {"application/zip"}
    assert media_types.verified_type("unknown", "application/zip", zip_too) == "application/zip"
    with pytest.raises(UnsupportedMediaType):
        media_types.verified_type("text", "application/zip", zip_too)


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("/etc/passwd", "passwd"),
        ("a\\b\\c.txt", "c.txt"),
        ("  spaced   out  .txt ", "spaced out .txt"),
        ("\u202egnp.exe", "gnp.exe"),
        ("", "file"),
        ("..", "file"),
        ("x" * 500, "x" * 200),
        ("y" * 300 + ".tar.gz", "y" * 197 + ".gz"),  # the last extension is kept
        ("NUL", "_NUL"),
    ],
)
def test_safe_names(given: str, safe: str) -> None:
    assert safe_name(given) == safe


def test_signatures_bind_every_field() -> None:
    signer = LinkSigner(b"k" * 32, clock=lambda: 1_000_000.0)
    owner = Owner("acme", "ada")
    signature = signer.sign("preview", "atc_1", owner, 3600)
    assert signature.expires % 300 == 0 and 1_003_600 <= signature.expires < 1_003_900
    assert signer.verify("preview", "atc_1", owner, signature.expires, signature.value)
    for kind, attachment_id, who, expires in (
        ("content", "atc_1", owner, signature.expires),
        ("preview", "atc_2", owner, signature.expires),
        ("preview", "atc_1", Owner("acme", "bob"), signature.expires),
        ("preview", "atc_1", Owner("other", "ada"), signature.expires),
        # Field boundaries cannot be shifted: tenant "acme", user "ada" vs "acmea", "da".
        ("preview", "atc_1", Owner("acmea", "da"), signature.expires),
        ("preview", "atc_1", owner, signature.expires + 1),
    ):
        assert not signer.verify(kind, attachment_id, who, expires, signature.value)
    assert not LinkSigner(b"j" * 32).verify(
        "preview", "atc_1", owner, signature.expires, signature.value
    )
    later = LinkSigner(b"k" * 32, clock=lambda: signature.expires + 1.0)
    assert not later.verify("preview", "atc_1", owner, signature.expires, signature.value)
    with pytest.raises(ValueError, match="32 bytes"):
        _ = LinkSigner(b"short").key


def test_the_development_key_is_made_once_and_shared(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, attachments_dir=str(tmp_path))  # type: ignore[call-arg]
    source = signing_key(settings)
    assert callable(source) and not (tmp_path / "signing.key").exists()  # not until used
    # Several workers starting at once all end up with the same key.
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: source(), range(16)))
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert (tmp_path / "signing.key").stat().st_mode & 0o777 == 0o600
    configured = Settings(_env_file=None, attachment_signing_key="s" * 40)  # type: ignore[call-arg]
    assert signing_key(configured) == b"s" * 40


async def test_local_disk_writes_once_and_keeps_keys_in_the_directory(tmp_path: Path) -> None:
    storage = LocalDiskStorage(tmp_path)
    first, second = storage.writer("atc_ab"), storage.writer("atc_ab")
    await first.write(b"first")
    await second.write(b"second")
    await first.commit()
    with pytest.raises(BlobExists):
        await second.commit()
    assert await storage.read("atc_ab", 100) == b"first"
    assert await storage.size("atc_ab") == 5
    assert [chunk async for chunk in storage.read_chunks("atc_ab")] == [b"first"]
    assert list((tmp_path / "partial").iterdir()) == []
    await storage.delete("atc_ab")
    await storage.delete("atc_ab")  # missing is fine
    with pytest.raises(BlobMissing):
        await storage.read("atc_ab", 1)
    with pytest.raises(BlobMissing):
        [chunk async for chunk in storage.read_chunks("atc_ab")]
    for bad in ("../x", "a/b", "", "x" * 200, "atc_ab\x00"):
        with pytest.raises(ValueError):
            storage.writer(bad)
    assert [key async for key in storage.keys_older_than(datetime.now(UTC))] == []
    writer = storage.writer("atc_cd")
    await writer.commit()  # empty is allowed at this level
    later = datetime.fromtimestamp(time.time() + 1, UTC)
    assert [key async for key in storage.keys_older_than(later)] == ["atc_cd"]


def test_the_offline_model_reads_labels_not_file_contents() -> None:
    content = [
        {"type": "input_text", "text": "What do you see?"},
        {"type": "input_text", "text": 'Attached file "cat.png" (image/png)'},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
        {"type": "input_text", "text": 'Attached file "n.txt" (text/plain):\nsecret notes'},
    ]
    conversation = [{"role": "user", "content": content}]
    assert last_user_text(conversation) == "What do you see?"  # type: ignore[arg-type]
    attachments = last_user_attachments(conversation)  # type: ignore[arg-type]
    assert attachments == ["cat.png (image/png)", "n.txt (text/plain)"]
    answer = offline_answer("What do you see?", None, attachments)
    assert "I received 2 attachments: cat.png (image/png), n.txt (text/plain)." in answer
    assert "secret notes" not in answer
    # The user's own text is never taken for a label, even when it looks like one.
    typed = [{"role": "user", "content": [content[1]]}]
    assert last_user_text(typed) == content[1]["text"]  # type: ignore[arg-type]
    assert last_user_attachments(typed) == []  # type: ignore[arg-type]
