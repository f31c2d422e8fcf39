"""Absolute, signed URLs for an attachment's bytes, preview and two-phase upload."""

from urllib.parse import urlencode

from chatkit.types import Attachment, ImageAttachment
from pydantic import AnyUrl

from chatkit_backend.attachments.signing import LinkKind, LinkSigner
from chatkit_backend.context import RequestContext
from chatkit_backend.store.attachments import Owner, owner_of

# Where the API serves attachments; `api/attachments.py` mounts its routes here.
ATTACHMENTS_PATH = "/chatkit/attachments"


class AttachmentLinks:
    """Builds links under PUBLIC_URL, or else the base URL the caller reached us at."""

    def __init__(
        self, signer: LinkSigner, public_url: str | None, url_ttl: int, upload_ttl: int
    ) -> None:
        self.signer = signer
        self.public_url = public_url
        self.ttl: dict[LinkKind, int] = {
            "content": url_ttl,
            "preview": url_ttl,
            "upload": upload_ttl,
        }

    def base(self, context: RequestContext) -> str | None:
        base = self.public_url or context.base_url
        return base.rstrip("/") if base else None

    def url(self, kind: LinkKind, attachment_id: str, owner: Owner, base: str) -> str:
        signature = self.signer.sign(kind, attachment_id, owner, self.ttl[kind])
        query = urlencode({"exp": signature.expires, "sig": signature.value})
        return f"{base}{ATTACHMENTS_PATH}/{attachment_id}/{kind}?{query}"

    def present(self, attachment: Attachment, context: RequestContext) -> Attachment:
        """The attachment with a fresh preview link for its owner, when it has one.

        Stored links expire; each load signs new ones, so a thread opened tomorrow
        still shows its images.
        """
        base = self.base(context)
        if not isinstance(attachment, ImageAttachment) or base is None:
            return attachment
        preview = self.url("preview", attachment.id, owner_of(context), base)
        return attachment.model_copy(update={"preview_url": AnyUrl(preview)})
