"""The host app: its users sign in with an `X-API-Key` header; ChatKit lives under /api.

Run: `uvicorn --factory host.main:create_app` with DATABASE_URL set (see README.md).
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from chatkit_backend import Caller, ChatKitBackend, Settings
from host.agent import build_agent
from host.models import CHATKIT_TABLE_PREFIX, User, key_digest


def create_app(settings: Settings | None = None) -> FastAPI:
    # chatkit-backend's settings (DATABASE_URL, LLM_PROVIDER, ...) from the environment;
    # the host uses the same database for its own tables. Ours go under the prefix the
    # host chose, whatever the settings say: migrate.py uses the same.
    settings = (settings or Settings()).model_copy(update={"table_prefix": CHATKIT_TABLE_PREFIX})
    database_url = os.environ.get("HOST_DATABASE_URL", settings.database_url)
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            yield session

    async def get_current_user(
        session: Annotated[AsyncSession, Depends(get_session)],
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> User:
        if not x_api_key:
            raise HTTPException(401, "Send your API key in X-API-Key")
        user = await session.scalar(
            select(User).where(User.api_key_sha256 == key_digest(x_api_key))
        )
        if user is None:
            raise HTTPException(401, "Unknown API key")
        return user

    async def identify(
        request: Request, user: Annotated[User, Depends(get_current_user)]
    ) -> Caller:
        return Caller(user_id=str(user.id), tenant_id=str(user.org_id), role="member")

    backend = ChatKitBackend(settings, identify=identify, agent=build_agent(sessions))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with backend.lifespan(app):
            yield
        await engine.dispose()

    app = FastAPI(title="Example Inc.", lifespan=lifespan)

    @app.get("/me")
    async def me(user: Annotated[User, Depends(get_current_user)]) -> dict[str, str]:
        return {"name": user.name, "plan": user.plan}

    # POST /api/chatkit, uploads under /api/chatkit/attachments, signed links to them.
    app.include_router(backend.router, prefix="/api")
    app.include_router(backend.health_router, prefix="/api")
    return app
