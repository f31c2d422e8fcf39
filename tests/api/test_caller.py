"""`GET /chatkit/me`: the caller as the server sees it (the page's header shows it)."""

from tests.support.auth import jwt_app, new_user
from tests.support.chat_client import assert_envelope, local_app


async def test_the_local_user_without_auth(sqlite_database_url: str) -> None:
    names = {"local_user_id": "ada", "local_tenant_id": "lab"}
    async with local_app(sqlite_database_url, **names) as (_, http):
        response = await http.get("/chatkit/me")
    assert response.status_code == 200
    assert response.json() == {"user_id": "ada", "tenant_id": "lab", "role": "member"}
    assert response.headers["cache-control"] == "no-store"


async def test_whoever_the_token_names(sqlite_database_url: str) -> None:
    async with jwt_app(sqlite_database_url) as app:
        user = new_user()
        viewer = await app.client(user, tenant="globex", role="viewer")
        response = await viewer.http.get("/chatkit/me")
        assert response.json() == {"user_id": user, "tenant_id": "globex", "role": "viewer"}
        anonymous = await app.raw()
        assert_envelope(await anonymous.get("/chatkit/me"), 401, "unauthorized")
        forged = await app.raw({"Authorization": "Bearer not.a.token"})
        assert_envelope(await forged.get("/chatkit/me"), 401, "unauthorized")
