"""`AttachmentStorage` on an S3-compatible bucket (AWS S3, MinIO, R2, ...), through obstore.

Every replica sees the same files, so a file uploaded through one server is served by
any other. Layout under S3_PREFIX:

- `<key>`, `<key>.preview`: a blob and its preview, as on the local disk;
- `incoming/<key>`: what a browser PUT to a presigned upload URL, until `take_upload`
  copies it to `<key>` (server side) for checking. The URL can be used again while it
  lives, but never reaches a checked blob.

Direct uploads through the server stream to the bucket in parts (a multipart upload of
`PART_BYTES` parts): a file is never held whole. Any failure to reach the bucket is a
`StorageUnavailable` (503) and one warning line, without the client's message, which
names URLs.
"""

import logging
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NoReturn, TypeVar

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from chatkit_backend.attachments.storage import (
    KEY,
    PREVIEW_SUFFIX,
    BlobExists,
    BlobMissing,
    StorageUnavailable,
)
from chatkit_backend.settings import Settings

if TYPE_CHECKING:
    from obstore import AsyncWritableFile
    from obstore.store import ClientConfig, RetryConfig

logger = logging.getLogger(__name__)

INCOMING = "incoming/"
# S3's smallest part (but the last): a direct upload holds at most this much (times
# `PART_CONCURRENCY`, parts in flight) in memory.
PART_BYTES = 5 * 1024 * 1024
PART_CONCURRENCY = 2
# Chunks of a download as they are streamed to the client.
READ_CHUNK_BYTES = 256 * 1024
# An unreachable bucket answers 503 within seconds instead of the client's default of
# ten retries over three minutes; a large file still has a minute to stream.
CLIENT_OPTIONS: "ClientConfig" = {
    "connect_timeout": timedelta(seconds=3),
    "timeout": timedelta(seconds=60),
}
RETRIES: "RetryConfig" = {
    "max_retries": 2,
    "retry_timeout": timedelta(seconds=10),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=2),
        "base": 2,
    },
}

T = TypeVar("T")


def _unavailable(operation: str, exc: Exception) -> NoReturn:
    logger.warning("object storage unavailable during %s: %s", operation, type(exc).__name__)
    raise StorageUnavailable() from None


async def _reached(operation: str, call: Awaitable[T]) -> T:
    """`call`'s result; a missing object is `BlobMissing`, any other failure 503."""
    try:
        return await call
    except FileNotFoundError:
        raise BlobMissing(operation) from None
    except (BaseError, OSError) as exc:
        _unavailable(operation, exc)


def _check_key(key: str) -> str:
    if not KEY.fullmatch(key):
        raise ValueError("not a valid blob key")
    return key


class S3Writer:
    """Streams a blob to the bucket in parts; nothing is visible under the key until
    `commit` completes the upload, and `abort` throws the parts away."""

    def __init__(self, storage: "S3Storage", key: str) -> None:
        self.storage = storage
        self.key = _check_key(key)
        self._file: AsyncWritableFile | None = None
        self._done = False

    async def write(self, chunk: bytes) -> None:
        if self._file is None:
            self._file = obstore.open_writer_async(
                self.storage.store,
                self.key,
                buffer_size=PART_BYTES,
                max_concurrency=PART_CONCURRENCY,
            )
        await _reached("upload", self._file.write(chunk))

    async def commit(self) -> None:
        if self._file is None:  # nothing written: an empty blob
            await self.write(b"")
        assert self._file is not None
        # Keys are new random ids, written by one request each: this check stands in
        # for the local disk's exclusive create, which S3's multipart uploads lack.
        if await self.storage.exists(self.key):
            await self.abort()
            raise BlobExists(self.key)
        file, self._file = self._file, None
        try:
            await _reached("upload", file.close())
        except BaseException:
            self._done = True
            raise
        self._done = True

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            # The writer's own way out: leaving its block by an error aborts the
            # multipart upload, so no parts are left in the bucket.
            await file.__aexit__(RuntimeError, RuntimeError("aborted"), None)
        except (BaseError, OSError) as exc:
            # Parts left behind by an outage: the bucket's lifecycle rule for incomplete
            # multipart uploads removes them (docs/attachments.md).
            logger.warning("object storage: aborting an upload failed: %s", type(exc).__name__)


class S3Storage:
    """`AttachmentStorage` and `DirectUploads` on one bucket, under one prefix."""

    def __init__(self, store: S3Store) -> None:
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Storage":
        assert settings.s3_bucket is not None  # Settings refuse s3 without it
        config: dict[str, str] = {}
        if settings.s3_endpoint_url is not None:
            config["endpoint"] = settings.s3_endpoint_url
        if settings.aws_region is not None:
            config["region"] = settings.aws_region
        if settings.aws_access_key_id is not None and settings.aws_secret_access_key is not None:
            config["access_key_id"] = settings.aws_access_key_id
            config["secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
        options = dict(CLIENT_OPTIONS)
        # MinIO and friends on a private network often speak plain http.
        options["allow_http"] = (settings.s3_endpoint_url or "").startswith("http://")
        store = S3Store(
            settings.s3_bucket.strip(),
            prefix=settings.s3_prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            retry_config=RETRIES,
        )
        return cls(store)

    # AttachmentStorage

    def writer(self, key: str) -> S3Writer:
        return S3Writer(self, key)

    async def read_chunks(self, key: str) -> AsyncIterator[bytes]:
        result = await _reached("download", obstore.get_async(self.store, _check_key(key)))
        stream = result.stream(min_chunk_size=READ_CHUNK_BYTES)
        while True:
            try:
                chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except (BaseError, OSError) as exc:
                _unavailable("download", exc)
            yield chunk

    async def read(self, key: str, limit: int) -> bytes:
        _check_key(key)
        if limit <= 0:
            return b""
        try:
            result = await obstore.get_async(self.store, key, options={"range": (0, limit)})
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            raise BlobMissing(key) from None
        except (BaseError, OSError) as exc:
            # An empty object has no first byte to ask for (416): read it whole.
            if await self.size(key) == 0:
                return b""
            _unavailable("download", exc)

    async def size(self, key: str) -> int:
        meta = await _reached("head", obstore.head_async(self.store, _check_key(key)))
        return meta["size"]

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except BlobMissing:
            return False
        return True

    async def delete(self, key: str) -> None:
        # One request for both (S3's bulk delete); missing objects are not an error.
        paths = [_check_key(key), key + PREVIEW_SUFFIX]
        await _reached("delete", obstore.delete_async(self.store, paths))

    async def read_preview(self, key: str) -> bytes | None:
        path = _check_key(key) + PREVIEW_SUFFIX
        try:
            result = await _reached("preview", obstore.get_async(self.store, path))
            return bytes(await _reached("preview", result.bytes_async()))
        except BlobMissing:
            return None

    async def save_preview(self, key: str, data: bytes) -> None:
        # A single PUT replaces the object atomically: no reader sees half a preview.
        path = _check_key(key) + PREVIEW_SUFFIX
        await _reached("preview", obstore.put_async(self.store, path, data))

    async def keys_older_than(self, cutoff: datetime) -> AsyncIterator[str]:
        previous = None
        async for path in self._paths_older_than(cutoff, incoming=False):
            key = path.removesuffix(PREVIEW_SUFFIX)
            # Listings are in key order, and ids are all one length: a preview comes
            # right after its blob, and names the same key once.
            if KEY.fullmatch(key) and key != previous:
                previous = key
                yield key

    async def purge_incomplete(self, cutoff: datetime) -> int:
        """Remove presigned uploads never taken (`incoming/`). Multipart uploads cut off by
        a crash are not listed by the client: the bucket's lifecycle rule removes them."""
        stale = [path async for path in self._paths_older_than(cutoff, incoming=True)]
        for start in range(0, len(stale), 1000):
            await _reached("delete", obstore.delete_async(self.store, stale[start : start + 1000]))
        return len(stale)

    async def _paths_older_than(self, cutoff: datetime, *, incoming: bool) -> AsyncIterator[str]:
        # Page by page: a sweep of a large bucket holds one page of names at a time.
        listing = obstore.list(self.store, prefix=INCOMING if incoming else None, chunk_size=500)
        while True:
            try:
                page = await anext(listing)
            except StopAsyncIteration:
                return
            except (BaseError, OSError) as exc:
                _unavailable("list", exc)
            for meta in page:
                path = meta["path"]
                if (incoming or not path.startswith(INCOMING)) and meta["last_modified"] < cutoff:
                    yield path

    # DirectUploads

    async def upload_url(self, key: str, ttl: timedelta) -> str:
        path = INCOMING + _check_key(key)
        try:
            return await obstore.sign_async(self.store, "PUT", path, ttl)
        except (BaseError, OSError) as exc:
            _unavailable("sign", exc)

    async def take_upload(self, key: str) -> None:
        incoming = INCOMING + _check_key(key)
        try:
            # Server side: the bytes never come through this process.
            await _reached("copy", obstore.copy_async(self.store, incoming, key))
        except BlobMissing:
            # Nothing uploaded, or taken already (by another request, or before a crash).
            if not await self.exists(key):
                raise
            return
        await _reached("delete", obstore.delete_async(self.store, incoming))
