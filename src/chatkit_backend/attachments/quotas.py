"""Per-user attachment quotas: how many files, and how many bytes, one user may keep.

Without them any member could fill the disk: uploads are fast, and unsent files wait a
day for the cleanup. Counted in the database (`AttachmentRecords.usage`), so they hold
across workers and replicas. Refusals say what frees room: sending or deleting.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chatkit_backend.errors import RequestError
from chatkit_backend.settings import Settings
from chatkit_backend.store.attachments import Usage

KIB = 1024


class TooManyUnsent(RequestError):
    """The owner already has the most attachments not yet sent in a message."""

    status = 429
    code = "quota_exceeded"


class OverQuota(RequestError):
    """The file would take the owner's attachments past a byte quota."""

    status = 413
    code = "quota_exceeded"


def size_text(size: int) -> str:
    """Bytes as people read them: 100 MiB, 1 GiB, 1.5 KiB."""
    for unit, scale in (("GiB", KIB**3), ("MiB", KIB**2), ("KiB", KIB)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True, slots=True)
class Quotas:
    most: Usage  # the most one owner may hold
    upload_ttl: timedelta  # a two-phase upload whose link died holds nothing

    def live_after(self) -> datetime:
        """Pending uploads created before this can never get their bytes."""
        return datetime.now(UTC) - self.upload_ttl

    def room(self, usage: Usage) -> int:
        """How many bytes one more file may have."""
        return min(
            self.most.unsent_bytes - usage.unsent_bytes, self.most.total_bytes - usage.total_bytes
        )

    def refusal(self, usage: Usage, size: int) -> RequestError | None:
        """Why one more file of `size` bytes does not fit; None when it does."""
        most = self.most
        if usage.unsent_count + 1 > most.unsent_count:
            return TooManyUnsent(
                f"You have {usage.unsent_count} attachments not yet sent in a message, the "
                f"most allowed ({most.unsent_count}); send them or delete some, then try again"
            )
        if usage.unsent_bytes + size > most.unsent_bytes:
            return OverQuota(
                f"Your attachments not yet sent in a message would pass "
                f"{size_text(most.unsent_bytes)} ({size_text(usage.unsent_bytes)} in use); "
                "send them or delete some, then try again"
            )
        if usage.total_bytes + size > most.total_bytes:
            return OverQuota(
                f"Your attachments would pass your {size_text(most.total_bytes)} of storage "
                f"({size_text(usage.total_bytes)} in use); delete attachments or threads "
                "you no longer need, then try again"
            )
        return None


def quotas_from(settings: Settings) -> Quotas:
    most = Usage(
        unsent_count=settings.attachment_quota_unsent_count,
        unsent_bytes=settings.attachment_quota_unsent_bytes,
        total_bytes=settings.attachment_quota_total_bytes,
    )
    return Quotas(most, timedelta(seconds=settings.attachment_upload_ttl_seconds))
