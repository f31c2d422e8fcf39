"""One upload on its way to storage: streamed, size-capped and sniffed as it arrives.

Nothing is buffered beyond a chunk: memory stays flat whatever the file's size, and an
oversized upload is refused at the first byte over the limit, not after it arrived.
"""

from collections.abc import AsyncIterator, Callable
from types import TracebackType

import anyio

from chatkit_backend.attachments.sniffing import ContentSniffer
from chatkit_backend.attachments.storage import AttachmentStorage, BlobWriter
from chatkit_backend.errors import RequestError


class Incoming:
    """Use as `async with`: leaving without `commit()` (or by an error) discards the bytes."""

    def __init__(self, storage: AttachmentStorage, key: str) -> None:
        self.writer: BlobWriter = storage.writer(key)
        self.sniffer = ContentSniffer()

    @property
    def size(self) -> int:
        return self.sniffer.size

    @property
    def content(self) -> str:
        """What the bytes are (see `sniffing`); ask after `take`."""
        return self.sniffer.result()

    async def take(
        self, chunks: AsyncIterator[bytes], limit: int, too_large: Callable[[], RequestError]
    ) -> None:
        """Write every chunk; raise `too_large()` as soon as more than `limit` bytes came."""
        async for chunk in chunks:
            if self.sniffer.size + len(chunk) > limit:
                raise too_large()
            self.sniffer.feed(chunk)
            await self.writer.write(chunk)

    async def commit(self) -> None:
        await self.writer.commit()

    async def __aenter__(self) -> "Incoming":
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Also when the client went away and this task is being cancelled.
        with anyio.CancelScope(shield=True):
            await self.writer.abort()
