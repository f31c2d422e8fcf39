"""Building the attachment machinery from settings."""

from contextlib import AbstractAsyncContextManager
from datetime import timedelta

from chatkit_backend.attachments.cleanup import CleanupReport, clean_up, cleaning
from chatkit_backend.attachments.links import AttachmentLinks
from chatkit_backend.attachments.local_disk import LocalDiskStorage
from chatkit_backend.attachments.model_input import AttachmentInput
from chatkit_backend.attachments.service import AttachmentService, Limits
from chatkit_backend.attachments.signing import LinkSigner, signing_key
from chatkit_backend.settings import Settings
from chatkit_backend.store.attachments import AttachmentRecords
from chatkit_backend.store.engine import create_engine

# Providers whose APIs read PDF `input_file` parts. Gemini's and local servers'
# OpenAI-compatible endpoints do not, so they get a note instead; the offline model
# reads only the labels.
FILE_INPUT_PROVIDERS = frozenset({"openai", "offline"})


def build_attachments(settings: Settings, records: AttachmentRecords) -> AttachmentService:
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


def attachment_input(settings: Settings, service: AttachmentService) -> AttachmentInput:
    files_accepted = settings.resolved_provider in FILE_INPUT_PROVIDERS
    return AttachmentInput(service.storage, settings.max_attachment_bytes, files_accepted)


def cleanup_schedule(
    settings: Settings, service: AttachmentService
) -> AbstractAsyncContextManager[None]:
    """The in-server cleanup (ATTACHMENT_CLEANUP_INTERVAL_SECONDS; 0: none), for the lifespan."""
    return cleaning(
        service.records,
        service.storage,
        settings.attachment_cleanup_interval_seconds,
        timedelta(hours=settings.attachment_unsent_ttl_hours),
    )


async def clean_up_once(settings: Settings) -> CleanupReport:
    """One cleanup pass on its own engine: `chatkit-backend cleanup`, e.g. from cron."""
    engine = create_engine(settings.database_url, settings.database_pool_size)
    try:
        return await clean_up(
            AttachmentRecords(engine),
            LocalDiskStorage(settings.attachments_dir),
            timedelta(hours=settings.attachment_unsent_ttl_hours),
        )
    finally:
        await engine.dispose()
