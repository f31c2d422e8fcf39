"""Where attachment bytes live, behind an interface local disk and object stores can share.

Callers name blobs by key (the attachment id) and never see paths or buckets, so an
S3-compatible store can replace the local disk without touching them.
"""

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol


class BlobMissing(Exception):
    """No blob under that key."""


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
        """Remove the blob; a missing one is not an error."""

    def keys_older_than(self, cutoff: datetime) -> AsyncIterator[str]:
        """Keys of blobs last written before `cutoff` (the orphan sweep walks these)."""

    async def purge_incomplete(self, cutoff: datetime) -> int:
        """Remove writes abandoned before `cutoff` (a crash mid-upload); return how many."""
