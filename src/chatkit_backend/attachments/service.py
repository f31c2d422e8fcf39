"""Attachments end to end: the SDK's `AttachmentStore`, both upload paths, signed access.

Bytes are stored under the attachment id; the record (owner, upload state, size) is in
the database. Bytes are committed before the record says they exist, and the record is
removed before the bytes, so a failure in between leaves at worst unreferenced bytes,
which `cleanup` sweeps.
"""

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
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
from chatkit_backend.attachments.quotas import OverQuota, Quotas, quotas_from
from chatkit_backend.attachments.s3_storage import S3Storage
from chatkit_backend.attachments.storage import (
    AttachmentStorage,
    BlobExists,
    BlobMissing,
    BlobWriter,
    DirectUploads,
    LocalDiskStorage,
    StorageUnavailable,
)
from chatkit_backend.context import Owner, RequestContext
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
# In a pending upload's metadata (never shown to clients): when it was created, in Unix
# seconds, so a check after its link died can tell that the quota no longer counts it.
UPLOAD_CREATED = "upload_created"

logger = logging.getLogger(__name__)


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
        quotas: Quotas,
        direct: DirectUploads | None = None,
    ) -> None:
        self.records = records
        self.storage = storage
        # Set when two-phase uploads go from the browser to the storage itself (S3).
        self.direct = direct
        self.links = links
        self.limits = limits
        self._making_previews = anyio.Lock()
        self.quotas = quotas

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
        attachment = self._attachment(attachment_id, name, claim or "application/octet-stream")
        if self.direct is not None:
            # The browser PUTs the bytes to the bucket; `confirm_upload` checks them there.
            ttl = timedelta(seconds=self.links.ttl["upload"])
            upload_url = await self.direct.upload_url(attachment_id, ttl)
            descriptor = AttachmentUploadDescriptor(url=upload_url, method="PUT")
            attachment.metadata = {UPLOAD_CREATED: int(time.time())}
        else:
            # The ChatKit client POSTs multipart/form-data with a `file` field here.
            upload_url = self.links.url("upload", attachment_id, context.owner, base)
            descriptor = AttachmentUploadDescriptor(url=upload_url, method="POST")
        attachment = self.links.present(attachment, context).model_copy(
            update={"upload_descriptor": descriptor}
        )
        # The declared size is held from now on: the bytes to come are already counted.
        await self._create_within_quota(attachment, context.owner, input.size, uploaded=False)
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

    async def confirm_upload(self, record: AttachmentRecord) -> AttachmentRecord:
        """A two-phase upload the browser sent to the storage itself (S3), checked as one
        through this server is: the declared size, a type its bytes bear out, and the
        quota again if its link died meanwhile (the quota stopped counting it then).
        Refused bytes are deleted; while the link lives, the file can be PUT again.

        Runs when a message first uses the attachment, or when the client asks
        (`POST .../complete`). Not uploaded yet (or not with S3): 400, as before."""
        if record.uploaded:
            return record
        attachment = record.attachment
        not_yet = InvalidRequest(f"Attachment {attachment.id} has not finished uploading")
        if self.direct is None:
            raise not_yet
        try:
            await self.direct.take_upload(attachment.id)
            size, mime_type = await self._check_taken(record)
        except BlobMissing:
            raise not_yet from None
        except RequestError as exc:
            if exc.status < 500:  # refused for good, not an outage
                await self._forget([attachment.id])
            raise
        metadata = {k: v for k, v in (attachment.metadata or {}).items() if k != UPLOAD_CREATED}
        uploaded = attachment.model_copy(
            update={"mime_type": mime_type, "upload_descriptor": None, "metadata": metadata or None}
        )
        if await self.records.mark_uploaded(uploaded, record.owner, size):
            return AttachmentRecord(uploaded, record.owner, size, uploaded=True)
        # Another request checked the same bytes meanwhile, and its record stands; or the
        # attachment was deleted meanwhile, and these bytes are nobody's.
        again = await self.records.load(attachment.id, record.owner)
        if again is None:
            await self._forget([attachment.id])
            raise NotFound(f"Attachment {attachment.id} not found")
        return again

    async def _check_taken(self, record: AttachmentRecord) -> tuple[int, str]:
        """The size and verified type of a taken upload, or the 4xx that refuses it."""
        key = record.attachment.id
        declared = record.size_bytes or 0
        size = await self.storage.size(key)
        if size != declared:
            raise InvalidRequest(f"The upload has {size} bytes; {declared} were declared")
        # The first bytes decide a binary type; text must be UTF-8 all the way through.
        sniffer, head = ContentSniffer(), b""
        chunks = self.storage.read_chunks(key)
        try:
            async for chunk in chunks:
                sniffer.feed(chunk)
                head = (head + chunk)[:16]
                if media_types.magic_type(head) is not None:
                    break
        finally:
            if isinstance(chunks, AsyncGenerator):  # left early: end its download now
                await chunks.aclose()
        mime_type = media_types.verified_type(
            sniffer.result(), record.attachment.mime_type, self.limits.allowed_types
        )
        created = (record.attachment.metadata or {}).get(UPLOAD_CREATED)
        live_after = self.quotas.live_after()
        if isinstance(created, int) and created < live_after.timestamp():
            # Not atomic with the update, unlike a new record's check: at worst two late
            # checks of one owner's files at the same moment both fit.
            usage = await self.records.usage(record.owner, live_after)
            if refusal := self.quotas.refusal(usage, size):
                raise refusal
        return size, mime_type

    # Direct: one multipart request carries the bytes and makes the attachment.

    async def receive_direct(self, upload: Upload, context: RequestContext) -> Attachment:
        self._base(context)  # fail before the upload, not after it
        name = safe_name(upload.name)
        claim = media_types.claimed_type(upload.declared_type, name)
        # Refuse a type that cannot be accepted before reading a byte of it.
        if claim not in media_types.GENERIC:
            claim = media_types.accepted_claim(claim, self.limits.allowed_types)
        attachment_id = self.generate_attachment_id(claim, context)
        # The size is known only once the bytes are in: refuse a full quota before the
        # first byte, and stop reading where the room left ends.
        usage = await self.records.usage(context.owner, self.quotas.live_after())
        if refusal := self.quotas.refusal(usage, 1):
            raise refusal
        room = self.quotas.room(usage)

        def too_large() -> RequestError:
            if room < self.limits.max_bytes:
                return self.quotas.refusal(usage, room + 1) or self._too_large()
            return self._too_large()

        async with Incoming(self.storage, attachment_id) as incoming:
            await incoming.take(upload.chunks, min(room, self.limits.max_bytes), too_large)
            if incoming.size == 0:
                raise InvalidRequest("The file is empty")
            mime_type = media_types.verified_type(
                incoming.content, claim, self.limits.allowed_types
            )
            await self._commit(incoming)
        attachment = self.links.present(self._attachment(attachment_id, name, mime_type), context)
        try:
            # Counted again with the record: others may have used the room meanwhile.
            await self._create_within_quota(attachment, context.owner, incoming.size, uploaded=True)
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

    async def _create_within_quota(
        self, attachment: Attachment, owner: Owner, size: int, *, uploaded: bool
    ) -> None:
        quotas = self.quotas
        created = await self.records.create(
            attachment,
            owner,
            size,
            uploaded=uploaded,
            most=quotas.most,
            live_after=quotas.live_after(),
        )
        if not created:
            usage = await self.records.usage(owner, quotas.live_after())
            # Room freed in between: still refused, as the insert saw it.
            raise quotas.refusal(usage, size) or OverQuota(
                "Your attachments are over their quota; send or delete some, then try again"
            )

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
                try:
                    await self.storage.delete(attachment_id)
                except StorageUnavailable:
                    # The records are gone, so these bytes are orphans: the cleanup's
                    # sweep removes them once the storage answers again.
                    logger.warning("attachment bytes left for the cleanup: storage unavailable")
                    return


def build_storage(settings: Settings) -> LocalDiskStorage | S3Storage:
    """Where attachment bytes live: ATTACHMENT_STORAGE (a local directory, or a bucket)."""
    if settings.attachment_storage == "s3":
        return S3Storage.from_settings(settings)
    return LocalDiskStorage(settings.attachments_dir)


def build_attachments(
    settings: Settings, records: AttachmentRecords, storage: AttachmentStorage | None = None
) -> AttachmentService:
    """The attachment service the settings describe, on `storage` (else `build_storage`)."""
    storage = storage if storage is not None else build_storage(settings)
    direct = storage if isinstance(storage, DirectUploads) else None
    links = AttachmentLinks(
        LinkSigner(signing_key(settings)),
        settings.public_url,
        url_ttl=settings.attachment_url_ttl_seconds,
        upload_ttl=settings.attachment_upload_ttl_seconds,
    )
    limits = Limits(settings.max_attachment_bytes, frozenset(settings.allowed_attachment_types))
    return AttachmentService(records, storage, links, limits, quotas_from(settings), direct)
