"""Attachments end to end: the SDK's `AttachmentStore`, both upload paths, signed access.

Bytes are stored under the attachment id; the record (owner, upload state, size) is in
the database. Bytes are committed before the record says they exist, and the record is
removed before the bytes, so a failure in between leaves at worst unreferenced bytes,
which `cleanup` sweeps.
"""

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

import anyio
from chatkit.store import AttachmentStore
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ImageAttachment,
)
from pydantic import AnyUrl

from chatkit_backend.attachments import content as media_types
from chatkit_backend.attachments.content import ContentSniffer, safe_name
from chatkit_backend.attachments.links import AttachmentLinks, LinkKind, LinkSigner, signing_key
from chatkit_backend.attachments.storage import (
    AttachmentStorage,
    BlobExists,
    BlobMissing,
    BlobWriter,
    LocalDiskStorage,
)
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestError,
)
from chatkit_backend.settings import Settings
from chatkit_backend.store.attachments import AttachmentRecord, AttachmentRecords
from chatkit_backend.store.sql_store import new_id


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


BAD_LINK = "This link is invalid or has expired"


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    allowed_types: frozenset[str]


@dataclass(frozen=True, slots=True)
class Upload:
    """The file part of an upload request: its claimed name and type, and its bytes."""

    name: str
    declared_type: str
    chunks: AsyncIterator[bytes]


class AttachmentService(AttachmentStore[RequestContext]):
    """Creates, receives, serves and deletes attachments for their owners."""

    def __init__(
        self,
        records: AttachmentRecords,
        storage: AttachmentStorage,
        links: AttachmentLinks,
        limits: Limits,
    ) -> None:
        self.records = records
        self.storage = storage
        self.links = links
        self.limits = limits
        self._making_previews = anyio.Lock()

    def generate_attachment_id(self, mime_type: str, context: RequestContext) -> str:
        return new_id("attachment")

    # Two-phase: `attachments.create`, then the bytes to the signed upload link.

    async def create_attachment(
        self, input: AttachmentCreateParams, context: RequestContext
    ) -> Attachment:
        if input.size <= 0:
            raise InvalidRequest("size must be a positive number of bytes")
        if input.size > self.limits.max_bytes:
            raise self._too_large()
        name = safe_name(input.name)
        claim = media_types.claimed_type(input.mime_type, name)
        if claim not in media_types.GENERIC:
            claim = media_types.accepted_claim(claim, self.limits.allowed_types)
        attachment_id = self.generate_attachment_id(claim, context)
        base = self._base(context)
        upload_url = self.links.url("upload", attachment_id, context.owner, base)
        attachment = self._attachment(attachment_id, name, claim or "application/octet-stream")
        attachment = self.links.present(attachment, context).model_copy(
            # The ChatKit client POSTs multipart/form-data with a `file` field here.
            update={"upload_descriptor": AttachmentUploadDescriptor(url=upload_url, method="POST")}
        )
        await self.records.create(attachment, context.owner, input.size, uploaded=False)
        return attachment

    async def receive_pending(self, record: AttachmentRecord, upload: Upload) -> Attachment:
        """The bytes of a two-phase upload: the declared size, a matching type, once."""
        if record.uploaded:
            raise Conflict("This attachment has already been uploaded")
        declared = record.size_bytes or 0
        attachment = record.attachment

        def mismatch() -> RequestError:
            return InvalidRequest(f"The upload is larger than the declared {declared} bytes")

        async with Incoming(self.storage, attachment.id) as incoming:
            await incoming.take(upload.chunks, declared, mismatch)
            if incoming.size != declared:
                raise InvalidRequest(
                    f"The upload has {incoming.size} bytes; {declared} were declared"
                )
            mime_type = media_types.verified_type(
                incoming.content, attachment.mime_type, self.limits.allowed_types
            )
            await self._commit(incoming)
        uploaded = attachment.model_copy(update={"mime_type": mime_type, "upload_descriptor": None})
        if not await self.records.mark_uploaded(uploaded, record.owner, incoming.size):
            await self._forget([attachment.id])
            raise Conflict("This attachment was deleted or uploaded meanwhile")
        return uploaded

    # Direct: one multipart request carries the bytes and makes the attachment.

    async def receive_direct(self, upload: Upload, context: RequestContext) -> Attachment:
        self._base(context)  # fail before the upload, not after it
        name = safe_name(upload.name)
        claim = media_types.claimed_type(upload.declared_type, name)
        # Refuse a type that cannot be accepted before reading a byte of it.
        if claim not in media_types.GENERIC:
            claim = media_types.accepted_claim(claim, self.limits.allowed_types)
        attachment_id = self.generate_attachment_id(claim, context)
        async with Incoming(self.storage, attachment_id) as incoming:
            await incoming.take(upload.chunks, self.limits.max_bytes, self._too_large)
            if incoming.size == 0:
                raise InvalidRequest("The file is empty")
            mime_type = media_types.verified_type(
                incoming.content, claim, self.limits.allowed_types
            )
            await self._commit(incoming)
        attachment = self.links.present(self._attachment(attachment_id, name, mime_type), context)
        try:
            await self.records.create(attachment, context.owner, incoming.size, uploaded=True)
        except BaseException:
            await self._forget([attachment_id])
            raise
        return attachment

    # Deleting

    async def delete_attachment(self, attachment_id: str, context: RequestContext) -> None:
        # The SDK deletes the record after this; doing it here, owner-scoped, first means
        # another owner's id can never reach the bytes.
        if await self.records.delete(attachment_id, context.owner):
            await self._forget([attachment_id])

    async def delete_files(self, attachment_ids: Iterable[str]) -> None:
        """Remove the bytes of attachments whose records are already gone."""
        await self._forget(attachment_ids)

    # Serving signed links

    async def linked(
        self, kind: LinkKind, attachment_id: str, expires: int, signature: str
    ) -> AttachmentRecord:
        """The record a signed link grants access to; 403 for any link that does not verify.

        An unknown id answers like a bad signature, so links reveal nothing.
        """
        record = await self.records.load_unscoped(attachment_id)
        if record is None or not self.links.signer.verify(
            kind, attachment_id, record.owner, expires, signature
        ):
            raise Forbidden(BAD_LINK)
        return record

    async def open(self, record: AttachmentRecord) -> tuple[int, AsyncIterator[bytes]]:
        """The size and bytes of an uploaded attachment; 404 before the upload."""
        if not record.uploaded:
            raise NotFound("This attachment has not been uploaded yet")
        try:
            size = await self.storage.size(record.attachment.id)
        except BlobMissing:
            raise NotFound("This attachment's file is gone") from None
        return size, self.storage.read_chunks(record.attachment.id)

    async def preview(self, record: AttachmentRecord) -> bytes:
        """An uploaded image's preview (`content.image_preview`): made on the first request,
        kept beside the file (and deleted with it), served from there after; 415 if the
        image cannot be decoded."""
        if not record.uploaded:
            raise NotFound("This attachment has not been uploaded yet")
        key = record.attachment.id
        if (kept := await self.storage.read_preview(key)) is not None:
            return kept
        # One at a time in a process: a request that waited finds the preview made, and
        # decoding (memory by the pixel) never runs many times at once. Two processes
        # may both make one; the second replaces the first, harmlessly.
        async with self._making_previews:
            if (kept := await self.storage.read_preview(key)) is not None:
                return kept
            try:
                original = await self.storage.read(key, await self.storage.size(key))
            except BlobMissing:
                raise NotFound("This attachment's file is gone") from None
            # Kept even if this client hangs up: the next request would only redo it.
            with anyio.CancelScope(shield=True):
                made = await anyio.to_thread.run_sync(media_types.image_preview, original)
                await self.storage.save_preview(key, made)
        return made

    # Helpers

    def _base(self, context: RequestContext) -> str:
        base = self.links.base(context)
        if base is None:
            raise InvalidRequest("Set PUBLIC_URL: links to attachments need an absolute URL")
        return base

    def _attachment(self, attachment_id: str, name: str, mime_type: str) -> Attachment:
        if media_types.is_image(mime_type):
            # A placeholder until `links.present` signs one for the owner.
            placeholder = AnyUrl(f"https://invalid/{attachment_id}")
            return ImageAttachment(
                id=attachment_id, name=name, mime_type=mime_type, preview_url=placeholder
            )
        return FileAttachment(id=attachment_id, name=name, mime_type=mime_type)

    def _too_large(self) -> RequestError:
        mib = self.limits.max_bytes / (1024 * 1024)
        return PayloadTooLarge(f"The file is larger than the {mib:g} MiB limit")

    async def _commit(self, incoming: Incoming) -> None:
        try:
            await incoming.commit()
        except BlobExists:
            raise Conflict("This attachment has already been uploaded") from None

    async def _forget(self, attachment_ids: Iterable[str]) -> None:
        # Shielded: a client hanging up must not leave the bytes behind.
        with anyio.CancelScope(shield=True):
            for attachment_id in attachment_ids:
                await self.storage.delete(attachment_id)


def build_attachments(settings: Settings, records: AttachmentRecords) -> AttachmentService:
    """The attachment service the settings describe."""
    # Local disk for now; an S3-compatible `AttachmentStorage` would be chosen here.
    storage = LocalDiskStorage(settings.attachments_dir)
    links = AttachmentLinks(
        LinkSigner(signing_key(settings)),
        settings.public_url,
        url_ttl=settings.attachment_url_ttl_seconds,
        upload_ttl=settings.attachment_upload_ttl_seconds,
    )
    limits = Limits(settings.max_attachment_bytes, frozenset(settings.allowed_attachment_types))
    return AttachmentService(records, storage, links, limits)
