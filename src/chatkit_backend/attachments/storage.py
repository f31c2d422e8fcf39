"""Where attachment bytes live, behind an interface local disk and object stores can share.

Callers name blobs by key (the attachment id) and never see paths or buckets, so an
S3-compatible store can replace the local disk without touching them.
"""

import os
import re
import secrets
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio

from chatkit_backend.errors import Unavailable


class BlobMissing(Exception):
    """No blob under that key."""


class StorageUnavailable(Unavailable):
    """The storage cannot be reached (an object store down, refusing our credentials): a
    503 the client may retry, never a 500 with a traceback."""

    def __init__(self) -> None:
        super().__init__(
            "File storage is not answering; try again in a moment",
            "storage_unavailable",
            retry_after_seconds=5,
        )


class BlobExists(Exception):
    """A blob is already stored under that key; blobs are written once."""


class BlobWriter(Protocol):
    """One blob being written. Nothing is visible under the key until `commit`."""

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> None:
        """Publish the blob; raise `BlobExists` if the key is taken (the writer is then aborted)."""

    async def abort(self) -> None:
        """Throw the partial blob away. Harmless after `commit` or a second time."""


class AttachmentStorage(Protocol):
    """The bytes of attachments, by key."""

    def writer(self, key: str) -> BlobWriter:
        """Start writing the blob `key`."""

    def read_chunks(self, key: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; raises `BlobMissing` before the first."""

    async def read(self, key: str, limit: int) -> bytes:
        """At most the first `limit` bytes of the blob; raises `BlobMissing`."""

    async def size(self, key: str) -> int:
        """The blob's size in bytes; raises `BlobMissing`."""

    async def delete(self, key: str) -> None:
        """Remove the blob and its preview; a missing one is not an error."""

    async def read_preview(self, key: str) -> bytes | None:
        """The preview kept for blob `key`, or None if none was made yet."""

    async def save_preview(self, key: str, data: bytes) -> None:
        """Keep `data` as blob `key`'s preview, replacing any (previews can be made again)."""

    def keys_older_than(self, cutoff: datetime) -> AsyncIterator[str]:
        """Keys of blobs (or their previews) last written before `cutoff` (the orphan
        sweep walks these)."""

    async def purge_incomplete(self, cutoff: datetime) -> int:
        """Remove writes abandoned before `cutoff` (a crash mid-upload); return how many."""


@runtime_checkable
class DirectUploads(Protocol):
    """A storage that takes a two-phase upload's bytes from the browser itself (an object
    store's presigned URL), so they never pass through the server."""

    async def upload_url(self, key: str, ttl: timedelta) -> str:
        """A URL the browser PUTs the blob `key`'s bytes to, valid for `ttl`. What arrives
        there is not the blob yet: `take_upload` makes it one."""

    async def take_upload(self, key: str) -> None:
        """Make what was PUT to `key`'s upload URL the blob `key` (to be checked by the
        caller: the URL accepts any bytes). Harmless once done; raises `BlobMissing`
        when nothing arrived."""


# Keys become file names: nothing that could climb out of the directory.
KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# A preview is kept beside its blob, named after it: no key contains a dot.
PREVIEW_SUFFIX = ".preview"
CHUNK_BYTES = 64 * 1024


def _check_key(key: str) -> str:
    if not KEY.fullmatch(key):
        raise ValueError("not a valid blob key")
    return key


class LocalDiskWriter:
    """Writes to a private partial file; `commit` moves it under its key."""

    def __init__(self, storage: "LocalDiskStorage", key: str) -> None:
        self.final = storage.path_of(key)
        self.partial = storage.partial_dir / f"{secrets.token_hex(16)}.part"
        self._file: anyio.AsyncFile[bytes] | None = None
        self._done = False

    async def write(self, chunk: bytes) -> None:
        if self._file is None:
            await anyio.Path(self.partial.parent).mkdir(parents=True, exist_ok=True)
            self._file = await anyio.open_file(self.partial, "xb")
        await self._file.write(chunk)

    async def commit(self) -> None:
        if self._file is None:  # nothing written: an empty blob
            await self.write(b"")
        assert self._file is not None
        await self._file.flush()
        # The bytes must be on disk before the database says they are there.
        await anyio.to_thread.run_sync(os.fsync, self._file.wrapped.fileno())
        await self._close()
        try:
            await anyio.to_thread.run_sync(self._publish)
        except FileExistsError:
            await self.abort()
            raise BlobExists(self.final.name) from None
        self._done = True

    def _publish(self) -> None:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL claims the name atomically: of two concurrent writers only one wins,
        # and a blob, once written, is never replaced.
        os.close(os.open(self.final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.replace(self.partial, self.final)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        await self._close()
        await anyio.Path(self.partial).unlink(missing_ok=True)

    async def _close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await file.aclose()


class LocalDiskStorage:
    """`AttachmentStorage` on a local (or mounted) directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.partial_dir = self.root / "partial"

    def path_of(self, key: str) -> Path:
        # Two levels keep directories small; the key's tail is its most random part.
        return self.blob_dir / _check_key(key)[-2:] / key

    def preview_path_of(self, key: str) -> Path:
        return self.path_of(key).with_name(key + PREVIEW_SUFFIX)

    def writer(self, key: str) -> LocalDiskWriter:
        return LocalDiskWriter(self, key)

    async def read_chunks(self, key: str) -> AsyncIterator[bytes]:
        try:
            file = await anyio.open_file(self.path_of(key), "rb")
        except FileNotFoundError:
            raise BlobMissing(key) from None
        async with file:
            while chunk := await file.read(CHUNK_BYTES):
                yield chunk

    async def read(self, key: str, limit: int) -> bytes:
        try:
            async with await anyio.open_file(self.path_of(key), "rb") as file:
                return await file.read(limit)
        except FileNotFoundError:
            raise BlobMissing(key) from None

    async def size(self, key: str) -> int:
        try:
            return (await anyio.Path(self.path_of(key)).stat()).st_size
        except FileNotFoundError:
            raise BlobMissing(key) from None

    async def delete(self, key: str) -> None:
        await anyio.Path(self.path_of(key)).unlink(missing_ok=True)
        await anyio.Path(self.preview_path_of(key)).unlink(missing_ok=True)

    async def read_preview(self, key: str) -> bytes | None:
        try:
            return await anyio.Path(self.preview_path_of(key)).read_bytes()
        except FileNotFoundError:
            return None

    async def save_preview(self, key: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._replace_preview, key, data)

    def _replace_preview(self, key: str, data: bytes) -> None:
        # Written aside and renamed into place: a reader never sees half a preview.
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        partial = self.partial_dir / f"{secrets.token_hex(16)}.part"
        try:
            partial.write_bytes(data)
            final = self.preview_path_of(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)

    async def keys_older_than(self, cutoff: datetime) -> AsyncIterator[str]:
        keys = await anyio.to_thread.run_sync(self._old_files, self.blob_dir, cutoff, True)
        for key in keys:
            yield key

    async def purge_incomplete(self, cutoff: datetime) -> int:
        stale = await anyio.to_thread.run_sync(self._old_files, self.partial_dir, cutoff, False)
        for name in stale:
            await anyio.Path(self.partial_dir / name).unlink(missing_ok=True)
        return len(stale)

    @staticmethod
    def _old_files(directory: Path, cutoff: datetime, nested: bool) -> list[str]:
        if not directory.is_dir():
            return []
        limit = cutoff.timestamp()
        folders = [d for d in directory.iterdir() if d.is_dir()] if nested else [directory]
        names: list[str] = []
        for folder in folders:
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            names += [e.name for e in entries if e.is_file() and e.stat().st_mtime < limit]
        if not nested:
            return names
        # A preview alone (saved while its attachment was being deleted) names its key.
        keys = (name.removesuffix(PREVIEW_SUFFIX) for name in names)
        return list(dict.fromkeys(key for key in keys if KEY.fullmatch(key)))
