"""Attachment routes: direct and two-phase uploads, signed downloads and previews.

- `POST /chatkit/attachments` (bearer token): the direct-upload URL of the ChatKit
  frontend; multipart with a `file` field; answers the `Attachment`.
- `POST /chatkit/attachments/{id}/upload?exp&sig`: the signed URL `attachments.create`
  hands out for two-phase uploads; the same multipart shape.
- `GET /chatkit/attachments/{id}/content|preview?exp&sig`: the bytes (a preview: a small
  WebP of an image, made once), for `<img>` and links, which cannot send a token; the
  signature is the permission.
- `POST /chatkit/attachments/{id}/complete` (bearer token): with ATTACHMENT_STORAGE=s3,
  where the browser PUTs two-phase uploads to the bucket, checks the file there (size,
  type) at once rather than when a message first uses it.
- `GET /chatkit/attachments/{id}` (bearer token): the owner's attachment with fresh links.
"""

import contextlib
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import PurePosixPath
from typing import Any

from chatkit.types import Attachment
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Send

from chatkit_backend.api.deps import ContextDep, Services, ServicesDep, authentication_attempt
from chatkit_backend.api.multipart import Event, file_upload, multipart_events
from chatkit_backend.attachments import content as media_types
from chatkit_backend.attachments.content import content_disposition
from chatkit_backend.attachments.links import ATTACHMENTS_PATH, LinkKind
from chatkit_backend.attachments.service import BAD_LINK, AttachmentService
from chatkit_backend.attachments.storage import StorageUnavailable
from chatkit_backend.auth.roles import authorize
from chatkit_backend.chat.ids import check_id
from chatkit_backend.errors import Forbidden, NotFound, PayloadTooLarge
from chatkit_backend.store.attachments import AttachmentRecord

router = APIRouter(prefix=ATTACHMENTS_PATH)

# Room for the multipart boundaries, part headers and small extra fields.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Served files are data, never a page: no scripts, no plugins, no same-origin access.
SANDBOX = "default-src 'none'; sandbox"
# How long a browser may keep a served file at most (shorter when the link dies sooner).
MAX_CACHE_SECONDS = 3600

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not multipart, no `file` field, empty, not as declared; a bad id"},
    401: {"description": "Missing or invalid bearer token"},
    403: {"description": "The role may not upload, or the link is invalid or expired"},
    409: {"description": "The two-phase upload already arrived"},
    413: {"description": "Larger than MAX_ATTACHMENT_BYTES, or past a byte quota"},
    415: {"description": "A type not in ALLOWED_ATTACHMENT_TYPES, or content not as claimed"},
    429: {"description": "Over the request or upload rate, or too many unsent attachments"},
}


def _json(attachment: Attachment) -> Response:
    # As the SDK serialises attachments: integration metadata stays on the server.
    body = attachment.model_dump_json(exclude_none=True, context={"exclude_metadata": True})
    return Response(content=body, media_type="application/json")


def _check_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The upload is over the {limit}-byte limit")


def _multipart(request: Request, limit: int) -> AsyncGenerator[Event, None]:
    _check_length(request, limit)
    content_type = request.headers.get("content-type", "")
    return multipart_events(request.stream(), content_type, limit)


@router.post("", summary="Upload a file (direct upload)", responses=ERRORS)
async def upload_direct(request: Request, context: ContextDep, services: ServicesDep) -> Response:
    await services.limiter.admit_request(context.owner)
    authorize("attachments.create", context.role)
    await services.limiter.admit_upload(context.owner)
    limit = services.files.limits.max_bytes + MULTIPART_OVERHEAD_BYTES
    async with aclosing(_multipart(request, limit)) as events:
        attachment = await services.files.receive_direct(await file_upload(events), context)
    return _json(attachment)


def _expiry(exp: str) -> int:
    if not exp.isdigit() or len(exp) > 12:
        raise Forbidden(BAD_LINK)
    return int(exp)


async def _linked(
    files: AttachmentService, kind: LinkKind, attachment_id: str, exp: str, sig: str
) -> AttachmentRecord:
    # Before the lookup: a path can carry %00, which PostgreSQL refuses (a 500).
    check_id(attachment_id, "attachment_id")
    return await files.linked(kind, attachment_id, _expiry(exp), sig)


async def _signed(
    request: Request, services: Services, kind: LinkKind, attachment_id: str, exp: str, sig: str
) -> AttachmentRecord:
    # The signature is the credential: bad links count against the address as bad tokens do.
    async with authentication_attempt(request, services.limiter):
        return await _linked(services.files, kind, attachment_id, exp, sig)


@router.post("/{attachment_id}/upload", summary="Upload a file (two-phase)", responses=ERRORS)
async def upload_pending(
    attachment_id: str,
    request: Request,
    services: ServicesDep,
    exp: str = "",
    sig: str = "",
) -> Response:
    # The signature names the owner; a bearer token, if any, is not needed.
    record = await _signed(request, services, "upload", attachment_id, exp, sig)
    await services.limiter.admit_request(record.owner)
    limit = (record.size_bytes or 0) + MULTIPART_OVERHEAD_BYTES
    async with aclosing(_multipart(request, limit)) as events:
        attachment = await services.files.receive_pending(record, await file_upload(events))
    return _json(attachment)


@router.post(
    "/{attachment_id}/complete",
    summary="Check a two-phase upload sent straight to the object store (S3)",
    responses={
        **ERRORS,
        400: {"description": "Not uploaded yet, or not the declared size; a bad id"},
        404: {"description": "Not the caller's attachment"},
        503: {"description": "The object store is not answering"},
    },
)
async def complete(attachment_id: str, context: ContextDep, services: ServicesDep) -> Response:
    # Optional: a message that uses the attachment runs the same check. Asking here
    # tells the client at once whether its file was taken.
    await services.limiter.admit_request(context.owner)
    authorize("attachments.create", context.role)
    check_id(attachment_id, "attachment_id")
    record = await services.files.records.load(attachment_id, context.owner)
    if record is None:
        raise NotFound(f"Attachment {attachment_id} not found")
    record = await services.files.confirm_upload(record)
    return _json(services.files.links.present(record.attachment, context))


def _served_headers(name: str, size: int, expires: int, inline: bool) -> dict[str, str]:
    cache = max(0, min(MAX_CACHE_SECONDS, expires - int(time.time())))
    return {
        "Content-Length": str(size),
        "Content-Disposition": content_disposition("inline" if inline else "attachment", name),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": SANDBOX,
        # Private: a shared cache must not keep one user's file for another.
        "Cache-Control": f"private, max-age={cache}",
        # The frontend usually runs on another origin, and its `<img>` must load this.
        "Cross-Origin-Resource-Policy": "cross-origin",
    }


async def _serve(
    files: AttachmentService, record: AttachmentRecord, expires: int, inline: bool
) -> Response:
    size, chunks = await files.open(record)
    attachment = record.attachment
    media_type = attachment.mime_type
    if media_types.is_text_like(media_type):
        media_type += "; charset=utf-8"
    headers = _served_headers(attachment.name, size, expires, inline)
    return FileResponse(chunks, media_type=media_type, headers=headers)


class FileResponse(StreamingResponse):
    """A stored file's bytes. Storage lost halfway through (an object store going down):
    the response ends short of its Content-Length, so the client knows the file is
    incomplete; the storage logged a warning, and no traceback follows."""

    async def stream_response(self, send: Send) -> None:
        with contextlib.suppress(StorageUnavailable):
            await super().stream_response(send)


@router.get("/{attachment_id}/content", summary="An attachment's bytes (signed link)")
async def content(
    attachment_id: str, request: Request, services: ServicesDep, exp: str = "", sig: str = ""
) -> Response:
    record = await _signed(request, services, "content", attachment_id, exp, sig)
    # Images show in the page; anything else is downloaded, never rendered.
    inline = media_types.is_image(record.attachment.mime_type)
    return await _serve(services.files, record, int(exp), inline)


@router.get(
    "/{attachment_id}/preview",
    summary="An image attachment's preview, at most 512 px (signed link)",
    responses={
        404: {"description": "Not an image, not uploaded yet, or its file is gone"},
        415: {"description": "The image cannot be decoded, or is too large to"},
    },
)
async def preview(
    attachment_id: str, request: Request, services: ServicesDep, exp: str = "", sig: str = ""
) -> Response:
    record = await _signed(request, services, "preview", attachment_id, exp, sig)
    if not media_types.is_image(record.attachment.mime_type):
        raise NotFound("This attachment has no preview")
    data = await services.files.preview(record)
    # `cat.png` previews as `cat.webp`: a saved preview opens as what it is.
    name = PurePosixPath(record.attachment.name).stem + media_types.PREVIEW_EXTENSION
    headers = _served_headers(name, len(data), int(exp), inline=True)
    return Response(data, media_type=media_types.PREVIEW_TYPE, headers=headers)


@router.get("/{attachment_id}", summary="The caller's attachment, with fresh signed links")
async def describe(
    attachment_id: str, context: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    await services.limiter.admit_request(context.owner)
    check_id(attachment_id, "attachment_id")
    record = await services.files.records.load(attachment_id, context.owner)
    if record is None:
        raise NotFound(f"Attachment {attachment_id} not found")
    attachment = services.files.links.present(record.attachment, context)
    base = services.files.links.base(context)
    content_url = None
    if record.uploaded and base is not None:
        content_url = services.files.links.url("content", attachment_id, record.owner, base)
    return {
        "attachment": attachment.model_dump(
            mode="json", exclude_none=True, context={"exclude_metadata": True}
        ),
        "uploaded": record.uploaded,
        "size": record.size_bytes,
        "content_url": content_url,
    }
