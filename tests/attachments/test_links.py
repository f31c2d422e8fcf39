"""Signed links: tampering, expiry and kinds; no owner reaches another's attachment.

The isolation cases run on SQLite and PostgreSQL (the `database_url` fixture).
"""

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from chatkit_backend.attachments.service import AttachmentService
from chatkit_backend.context import Owner
from tests.support.attachments import (
    PNG,
    TEXT,
    UPLOAD_URL,
    describe,
    message,
    stored_files,
    uploaded,
)
from tests.support.attachments import upload as upload_file
from tests.support.auth import JwtApp, jwt_app, new_user
from tests.support.chat_client import ChatClient, assert_envelope

TENANT = "acme"


def _parts(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path, int(query["exp"][0]), query["sig"][0]


def _link(path: str, exp: object, sig: str) -> str:
    return f"http://testserver{path}?{urlencode({'exp': exp, 'sig': sig})}"


def _flip(sig: str) -> str:
    return ("B" if sig[0] == "A" else "A") + sig[1:]


@dataclass
class World:
    app: JwtApp
    owner: ChatClient
    owner_id: str
    anonymous: httpx.AsyncClient
    image: dict[str, str]
    notes: dict[str, str]
    attachments_dir: Path

    @property
    def service(self) -> AttachmentService:
        service: AttachmentService = self.app.app.state.services.files
        return service


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with jwt_app(database_url, attachments_dir=str(tmp_path)) as app:
        owner_id = new_user()
        owner = await app.client(owner_id, TENANT)
        image = await uploaded(owner, "cat.png", PNG, "image/png")
        notes = await uploaded(owner, "notes.txt", TEXT, "text/plain")
        yield World(app, owner, owner_id, await app.raw(), image, notes, tmp_path)


async def _forbidden(http: httpx.AsyncClient, url: str, method: str = "GET") -> httpx.Response:
    response = await http.request(method, url)
    assert_envelope(response, 403, "forbidden")
    assert response.json()["message"] == "This link is invalid or has expired"
    return response


async def test_a_tampered_link_is_403(world: World) -> None:
    preview = world.image["preview_url"]
    assert (await world.anonymous.get(preview)).status_code == 200
    path, exp, sig = _parts(preview)
    content_path = path.replace("/preview", "/content")
    notes_path = path.replace(world.image["id"], world.notes["id"])
    unknown_path = path.replace(world.image["id"], "atc_" + "0" * 32)
    for url in (
        _link(path, exp, _flip(sig)),  # another signature
        _link(path, exp + 3600, sig),  # a longer life
        _link(path, exp - 1, sig),
        _link(content_path, exp, sig),  # another kind of access
        _link(notes_path, exp, sig),  # another attachment
        _link(unknown_path, exp, sig),  # one that does not exist: the same answer
        _link(path, "soon", sig),
        _link(path, exp, ""),
        f"http://testserver{path}",
        f"http://testserver{path}?exp={exp}&sig={sig[:-1]}%C3%A9",
    ):
        await _forbidden(world.anonymous, url)


async def test_links_expire(world: World) -> None:
    preview = world.image["preview_url"]
    signer = world.service.links.signer
    _, exp, _ = _parts(preview)
    lifetime = exp - time.time()
    assert 3600 <= lifetime <= 3600 + 300  # ATTACHMENT_URL_TTL_SECONDS, rounded up

    real_clock = signer.clock
    signer.clock = lambda: exp + 1.0  # an hour and a bit later
    try:
        await _forbidden(world.anonymous, preview)
        # Loading the thread again signs fresh links that work.
        fresh = (await describe(world.owner, world.image["id"])).json()
        renewed = await world.anonymous.get(fresh["attachment"]["preview_url"])
        assert renewed.status_code == 200
        assert renewed.headers["content-type"] == "image/webp"
    finally:
        signer.clock = real_clock

    # A link signed with an expiry in the past, by the server's own key, is refused too.
    owner = Owner(TENANT, world.owner_id)
    path, _, _ = _parts(preview)
    past = signer.sign_until("preview", world.image["id"], owner, int(time.time()) - 1)
    await _forbidden(world.anonymous, _link(path, past.expires, past.value))


async def test_upload_links(world: World) -> None:
    created = await world.owner.call(
        "attachments.create", name="a.txt", size=len(TEXT), mime_type="text/plain"
    )
    url = created["upload_descriptor"]["url"]
    path, exp, sig = _parts(url)
    for bad in (_link(path, exp, _flip(sig)), _link(path.replace("/upload", "/content"), exp, sig)):
        method = "POST" if bad.split("?")[0].endswith("/upload") else "GET"
        await _forbidden(world.anonymous, bad, method)
    signer = world.service.links.signer
    real_clock = signer.clock
    signer.clock = lambda: exp + 1.0  # ATTACHMENT_UPLOAD_TTL_SECONDS later
    try:
        response = await upload_file(world.anonymous, "a.txt", TEXT, "text/plain", url)
        assert_envelope(response, 403, "forbidden")
    finally:
        signer.clock = real_clock
    assert stored_files(world.attachments_dir) == {world.image["id"], world.notes["id"]}
    # No token needed: the link is the permission.
    response = await upload_file(world.anonymous, "a.txt", TEXT, "text/plain", url)
    assert response.status_code == 200, response.text
    # Its bytes cannot be fetched with the upload link.
    await _forbidden(world.anonymous, _link(path.replace("/upload", "/content"), exp, sig))


async def test_what_has_no_bytes_or_no_preview_is_404(world: World) -> None:
    signer = world.service.links.signer
    owner = Owner(TENANT, world.owner_id)
    created = await world.owner.call(
        "attachments.create", name="a.txt", size=3, mime_type="text/plain"
    )
    pending = signer.sign("content", created["id"], owner, 60)
    path = f"{UPLOAD_URL}/{created['id']}/content"
    response = await world.anonymous.get(_link(path, pending.expires, pending.value))
    assert_envelope(response, 404, "not_found")
    no_preview = signer.sign("preview", world.notes["id"], owner, 60)
    path = f"{UPLOAD_URL}/{world.notes['id']}/preview"
    response = await world.anonymous.get(_link(path, no_preview.expires, no_preview.value))
    assert_envelope(response, 404, "not_found")


@pytest.mark.parametrize("intruder_kind", ["other user, same tenant", "same user, other tenant"])
async def test_no_url_reaches_another_owners_attachment(world: World, intruder_kind: str) -> None:
    if intruder_kind.startswith("other user"):
        intruder_owner = Owner(TENANT, new_user())
    else:
        intruder_owner = Owner("other-tenant", world.owner_id)
    intruder = await world.app.client(intruder_owner.user_id, intruder_owner.tenant_id)
    theirs, missing = world.image["id"], "atc_" + "1" * 32

    # Through the API: exactly as an id that does not exist.
    for attachment_id in (theirs, missing):
        response = await describe(intruder, attachment_id)
        assert_envelope(response, 404, "not_found")
        for body in (
            {"type": "attachments.delete", "params": {"attachment_id": attachment_id}},
            {"type": "threads.create", "params": {"input": message("mine", attachment_id)}},
        ):
            response = await intruder.post(body)
            assert_envelope(response, 404, "not_found")
            assert response.json()["message"] == f"Attachment {attachment_id} not found"

    # A link the server signed for the intruder does not open the owner's file.
    signer = world.service.links.signer
    for kind in ("content", "preview"):
        forged = signer.sign(kind, theirs, intruder_owner, 60)
        path = f"{UPLOAD_URL}/{theirs}/{kind}"
        await _forbidden(intruder.http, _link(path, forged.expires, forged.value))

    # The intruder's own upload's links name the intruder's attachment only.
    own = await uploaded(intruder, "mine.png", PNG, "image/png")
    path, exp, sig = _parts(own["preview_url"])
    await _forbidden(intruder.http, _link(path.replace(own["id"], theirs), exp, sig))

    # And the owner's file is untouched.
    shown = await world.anonymous.get(world.image["preview_url"])
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/webp"
    assert world.image["id"] in stored_files(world.attachments_dir)
