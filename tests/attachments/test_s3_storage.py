"""`S3Storage` against a real S3 server (moto's): the `AttachmentStorage` contract as the
local disk keeps it (blobs written once and whole, previews beside them, sweeps), the
presigned upload URL and its taking, and the settings that choose the storage."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from chatkit_backend.attachments.s3_storage import PART_BYTES, S3Storage
from chatkit_backend.attachments.service import build_attachments, build_storage
from chatkit_backend.attachments.storage import (
    BlobExists,
    BlobMissing,
    DirectUploads,
    LocalDiskStorage,
)
from chatkit_backend.settings import Settings
from tests.support.s3 import SECRET_ACCESS_KEY, S3Server, running_s3

KEY = "atc_" + "a" * 32
OTHER = "atc_" + "b" * 32


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()


def _storage(s3: S3Server, bucket: str, prefix: str = "attachments") -> S3Storage:
    return S3Storage.from_settings(Settings(_env_file=None, **s3.settings(bucket, prefix)))


async def test_a_blob_is_visible_only_once_committed_and_written_once(
    s3: S3Server, bucket: str
) -> None:
    storage = _storage(s3, bucket)
    writer = storage.writer(KEY)
    await writer.write(b"hello ")
    await writer.write(b"world")
    assert s3.keys(bucket) == set()
    await writer.commit()
    assert s3.get(bucket, KEY) == b"hello world"
    assert await storage.size(KEY) == 11
    assert await storage.read(KEY, 5) == b"hello"
    assert await storage.read(KEY, 100) == b"hello world"
    assert [chunk async for chunk in storage.read_chunks(KEY)] == [b"hello world"]

    second = storage.writer(KEY)
    await second.write(b"replaced?")
    with pytest.raises(BlobExists):
        await second.commit()
    assert s3.get(bucket, KEY) == b"hello world"


async def test_an_aborted_large_write_leaves_no_object_and_no_parts(
    s3: S3Server, bucket: str
) -> None:
    storage = _storage(s3, bucket)
    writer = storage.writer(KEY)
    for _ in range(3):  # past one part: a multipart upload is under way
        await writer.write(b"x" * (PART_BYTES // 2 + 1))
    assert s3.multipart_uploads(bucket) != []
    await writer.abort()
    await writer.abort()  # harmless a second time
    assert s3.keys(bucket) == set()
    assert s3.multipart_uploads(bucket) == []


async def test_missing_and_empty_objects(s3: S3Server, bucket: str) -> None:
    storage = _storage(s3, bucket)
    with pytest.raises(BlobMissing):
        await storage.size(KEY)
    with pytest.raises(BlobMissing):
        await storage.read(KEY, 10)
    with pytest.raises(BlobMissing):
        await anext(storage.read_chunks(KEY))
    assert await storage.read_preview(KEY) is None
    await storage.delete(KEY)  # nothing to delete: not an error

    empty = storage.writer(OTHER)
    await empty.commit()
    assert await storage.size(OTHER) == 0
    assert await storage.read(OTHER, 10) == b""


async def test_previews_beside_their_blob_and_deleted_with_it(s3: S3Server, bucket: str) -> None:
    storage = _storage(s3, bucket)
    writer = storage.writer(KEY)
    await writer.write(b"an image")
    await writer.commit()
    await storage.save_preview(KEY, b"first")
    await storage.save_preview(KEY, b"second")  # made again: replaces
    assert await storage.read_preview(KEY) == b"second"
    assert s3.keys(bucket) == {KEY, f"{KEY}.preview"}
    await storage.delete(KEY)
    assert s3.keys(bucket) == set()


async def test_upload_url_then_take_upload(s3: S3Server, bucket: str) -> None:
    storage = _storage(s3, bucket)
    assert isinstance(storage, DirectUploads)
    with pytest.raises(BlobMissing):
        await storage.take_upload(KEY)  # nothing PUT yet

    url = await storage.upload_url(KEY, timedelta(minutes=5))
    assert url.startswith(f"{s3.endpoint}/{bucket}/attachments/incoming/{KEY}?")
    assert "X-Amz-Expires=300" in url and "X-Amz-Signature=" in url
    assert SECRET_ACCESS_KEY not in url
    async with httpx.AsyncClient(timeout=10) as browser:
        response = await browser.put(url, content=b"from the browser")
    assert response.status_code == 200
    with pytest.raises(BlobMissing):
        await storage.size(KEY)  # not a blob until taken

    await storage.take_upload(KEY)
    assert s3.keys(bucket) == {KEY}
    assert await storage.read(KEY, 100) == b"from the browser"
    await storage.take_upload(KEY)  # taken already: harmless
    assert s3.keys(bucket) == {KEY}


async def test_sweeps_see_their_prefix_only(s3: S3Server, bucket: str) -> None:
    mine, theirs = _storage(s3, bucket, "mine"), _storage(s3, bucket, "theirs")
    for storage in (mine, theirs):
        writer = storage.writer(KEY)
        await writer.write(b"x")
        await writer.commit()
        await storage.save_preview(KEY, b"p")
    s3.put(bucket, f"incoming/{OTHER}", b"never taken", prefix="mine")
    s3.put(bucket, f"incoming/{OTHER}", b"never taken", prefix="theirs")

    later = datetime.now(UTC) + timedelta(minutes=1)
    assert [key async for key in mine.keys_older_than(later)] == [KEY]  # once, with its preview
    earlier = datetime.now(UTC) - timedelta(minutes=1)
    assert [key async for key in mine.keys_older_than(earlier)] == []
    assert await mine.purge_incomplete(earlier) == 0
    assert await mine.purge_incomplete(later) == 1
    assert s3.keys(bucket, "mine") == {KEY, f"{KEY}.preview"}
    assert s3.keys(bucket, "theirs") == {KEY, f"{KEY}.preview", f"incoming/{OTHER}"}


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_settings_choose_the_storage(s3: S3Server, bucket: str) -> None:
    local = _settings(attachments_dir="/tmp/x")
    assert isinstance(build_storage(local), LocalDiskStorage)
    s3_settings = _settings(**s3.settings(bucket))
    assert isinstance(build_storage(s3_settings), S3Storage)
    # Without an engine's use: the records are never touched here.
    service = build_attachments(s3_settings, records=None, storage=None)  # type: ignore[arg-type]
    assert isinstance(service.direct, S3Storage)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"attachment_storage": "s3"}, "ATTACHMENT_STORAGE=s3 needs S3_BUCKET"),
        (
            {"attachment_storage": "s3", "s3_bucket": "b", "aws_access_key_id": "AKIA1"},
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together",
        ),
        (
            {"attachment_storage": "s3", "s3_bucket": "b", "aws_secret_access_key": "sekrit-1"},
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together",
        ),
        ({"s3_prefix": "a/../b"}, "S3_PREFIX looks like"),
        ({"s3_prefix": "a//b"}, "S3_PREFIX looks like"),
        ({"s3_endpoint_url": "minio:9000"}, "S3_ENDPOINT_URL looks like"),
        ({"s3_endpoint_url": "https://minio.example.com/bucket"}, "S3_ENDPOINT_URL looks like"),
        ({"attachment_storage": "gcs"}, "attachment_storage"),
    ],
)
def test_bad_storage_settings_fail_fast(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        _settings(**values)
    assert message in str(error.value)
    for value in values.values():
        if value not in ("s3", "b", "gcs"):
            assert value not in str(error.value)  # names settings, never their values


def test_storage_settings_are_normalised() -> None:
    settings = _settings(s3_prefix="/chatkit/files/", s3_endpoint_url="https://r2.example.com/")
    assert settings.s3_prefix == "chatkit/files"
    assert settings.s3_endpoint_url == "https://r2.example.com"
    assert _settings(s3_prefix="").s3_prefix == ""
    assert _settings().attachment_storage == "local"
