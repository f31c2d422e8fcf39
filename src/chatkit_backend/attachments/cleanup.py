"""Removing what no message will use: unsent attachments past their TTL, bytes without a
record, and uploads abandoned halfway. Safe to run from several processes at once."""

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio

from chatkit_backend.attachments.service import AttachmentService, build_storage
from chatkit_backend.attachments.storage import AttachmentStorage
from chatkit_backend.settings import Settings
from chatkit_backend.store.attachments import AttachmentRecords
from chatkit_backend.store.engine import open_engine
from chatkit_backend.store.tables import tables_for

logger = logging.getLogger(__name__)

BATCH = 500
# The name of the task `cleaning` runs (to find it among a loop's tasks).
CLEANUP_TASK = "attachment-cleanup"


@dataclass(frozen=True, slots=True)
class CleanupReport:
    unsent: int  # attachments never sent in a message, record and bytes
    orphans: int  # bytes whose record is gone (a crash, or threads deleted elsewhere)
    partial: int  # uploads abandoned halfway


async def clean_up(
    records: AttachmentRecords,
    storage: AttachmentStorage,
    unsent_ttl: timedelta,
    now: datetime | None = None,
) -> CleanupReport:
    """One pass; everything it removes is older than `unsent_ttl`."""
    cutoff = (now or datetime.now(UTC)) - unsent_ttl
    unsent = 0
    while ids := await records.delete_unsent(cutoff, BATCH):
        for attachment_id in ids:
            await storage.delete(attachment_id)
        unsent += len(ids)
    # Bytes are written before their record, so only old bytes can be orphans: the
    # cutoff keeps this pass away from uploads in progress.
    orphans = 0
    batch: list[str] = []
    async for key in storage.keys_older_than(cutoff):
        batch.append(key)
        if len(batch) >= BATCH:
            orphans += await _delete_orphans(records, storage, batch)
            batch = []
    orphans += await _delete_orphans(records, storage, batch)
    partial = await storage.purge_incomplete(cutoff)
    return CleanupReport(unsent=unsent, orphans=orphans, partial=partial)


async def _delete_orphans(
    records: AttachmentRecords, storage: AttachmentStorage, keys: list[str]
) -> int:
    existing = await records.existing_ids(keys)
    orphans = [key for key in keys if key not in existing]
    for key in orphans:
        await storage.delete(key)
    return len(orphans)


async def clean_up_every(
    interval: float,
    records: AttachmentRecords,
    storage: AttachmentStorage,
    unsent_ttl: timedelta,
) -> None:
    """Run `clean_up` every `interval` seconds until cancelled; failures are logged."""
    # Workers started together should not all sweep at the same moment.
    await anyio.sleep(random.uniform(0, min(interval, 60.0)))  # noqa: S311 - not security
    while True:
        try:
            report = await clean_up(records, storage, unsent_ttl)
        except Exception as exc:
            logger.warning("attachment cleanup failed: %s", type(exc).__name__)
        else:
            if report.unsent or report.orphans or report.partial:
                logger.info(
                    "attachment cleanup removed %d unsent, %d orphaned, %d partial",
                    report.unsent,
                    report.orphans,
                    report.partial,
                )
        await anyio.sleep(interval)


@asynccontextmanager
async def cleaning(
    records: AttachmentRecords, storage: AttachmentStorage, interval: float, unsent_ttl: timedelta
) -> AsyncIterator[None]:
    """While inside, clean up every `interval` seconds; 0 runs nothing (cron instead)."""
    if interval <= 0:
        yield
        return
    # A plain task, not a task group: a lifespan may be left from another task than the
    # one that entered it (test fixtures do), which a task group's cancel scope refuses.
    task = asyncio.create_task(
        clean_up_every(interval, records, storage, unsent_ttl), name=CLEANUP_TASK
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
    async with open_engine(settings) as engine:
        return await clean_up(
            AttachmentRecords(engine, tables_for(settings.table_prefix)),
            build_storage(settings),  # ATTACHMENT_STORAGE's disk or bucket
            timedelta(hours=settings.attachment_unsent_ttl_hours),
        )
