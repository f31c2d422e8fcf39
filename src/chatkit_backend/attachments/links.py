"""Absolute, signed URLs for an attachment's bytes, preview and two-phase upload.

`<img src>` cannot send an Authorization header, so the link itself is the permission:
an HMAC over the kind of access, the attachment id, its owner and an expiry. A link
for one attachment, owner or kind cannot be turned into another, and every link dies.
"""

import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

from chatkit.types import Attachment, ImageAttachment
from pydantic import AnyUrl

from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.settings import Settings

LinkKind = Literal["content", "preview", "upload"]
LINK_KINDS: tuple[LinkKind, ...] = ("content", "preview", "upload")
_VERSION = "v1"
# Expiries are rounded up to this step (at most), so a page reloaded within it gets the
# same URLs and the browser's cache can answer.
_ROUNDING_SECONDS = 300
DEV_KEY_FILE = "signing.key"


@dataclass(frozen=True, slots=True)
class Signature:
    expires: int  # Unix seconds
    value: str  # URL-safe base64, unpadded


class LinkSigner:
    """Signs and checks links with one secret key, given or fetched on first use."""

    def __init__(
        self, key: bytes | Callable[[], bytes], clock: Callable[[], float] = time.time
    ) -> None:
        self._key_source = key
        self._key: bytes | None = None
        self.clock = clock

    @property
    def key(self) -> bytes:
        if self._key is None:
            source = self._key_source
            key = source if isinstance(source, bytes) else source()
            if len(key) < 32:
                raise ValueError("the link signing key must be at least 32 bytes")
            self._key = key
        return self._key

    def sign(self, kind: LinkKind, attachment_id: str, owner: Owner, ttl: int) -> Signature:
        step = max(1, min(_ROUNDING_SECONDS, ttl // 4))
        expires = math.ceil((self.clock() + ttl) / step) * step
        return self.sign_until(kind, attachment_id, owner, expires)

    def sign_until(
        self, kind: LinkKind, attachment_id: str, owner: Owner, expires: int
    ) -> Signature:
        return Signature(expires, self._mac(kind, attachment_id, owner, expires))

    def verify(
        self, kind: LinkKind, attachment_id: str, owner: Owner, expires: int, value: str
    ) -> bool:
        """True when `value` signs exactly this access and `expires` has not passed."""
        expected = self._mac(kind, attachment_id, owner, expires)
        # Compared in constant time, and before the clock, so timing says nothing.
        valid = hmac.compare_digest(expected.encode(), value.encode("utf-8", "replace"))
        return valid and expires >= self.clock()

    def _mac(self, kind: LinkKind, attachment_id: str, owner: Owner, expires: int) -> str:
        # JSON keeps the fields apart: no id or tenant can be shifted into another field.
        message = json.dumps(
            [_VERSION, kind, attachment_id, owner.tenant_id, owner.user_id, expires]
        )
        digest = hmac.new(self.key, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def signing_key(settings: Settings) -> bytes | Callable[[], bytes]:
    """ATTACHMENT_SIGNING_KEY; in development without it, a key kept in the attachments dir
    (read or made on first use, so apps that never link to a file touch no disk).

    A key made up per process would break links as soon as two workers serve: each
    would refuse the other's. The file is created once and shared by every worker.
    Production refuses to start without the setting (see `Settings`).
    """
    if settings.attachment_signing_key is not None:
        return settings.attachment_signing_key.get_secret_value().encode()
    path = Path(settings.attachments_dir) / DEV_KEY_FILE
    return lambda: _dev_key(path)


def _dev_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of several workers starting at once, exactly one writes the key.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "w") as file:
        key = secrets.token_hex(32)
        file.write(key)
    return key.encode()


def _read_key(path: Path) -> bytes:
    # The winner may still be writing its 64 characters.
    for _ in range(50):
        key = path.read_text().strip()
        if len(key) >= 64:
            return key.encode()
        time.sleep(0.02)
    raise RuntimeError(f"{path} does not hold a signing key; delete it to make a new one")


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
        # The request's base already starts with PUBLIC_URL when it is set, and adds the
        # prefix an app that includes our router mounted it under.
        base = context.base_url or self.public_url
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
        preview = self.url("preview", attachment.id, context.owner, base)
        return attachment.model_copy(update={"preview_url": AnyUrl(preview)})
