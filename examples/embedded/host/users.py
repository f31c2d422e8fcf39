"""Add an org and a user with a new API key: `python -m host.users ORG NAME`."""

import asyncio
import os
import secrets
import sys

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from host.models import Org, User, key_digest


async def add_user(
    sessions: async_sessionmaker[AsyncSession], org: str, name: str, plan: str = "free"
) -> tuple[User, str]:
    """A new user (in a new org) and the API key to send; only its digest is stored."""
    api_key = "key_" + secrets.token_urlsafe(24)
    async with sessions() as session, session.begin():
        row = Org(name=org)
        session.add(row)
        await session.flush()
        user = User(org_id=row.id, name=name, plan=plan, api_key_sha256=key_digest(api_key))
        session.add(user)
    return user, api_key


async def main(org: str, name: str) -> None:
    engine = create_async_engine(os.environ["DATABASE_URL"])
    try:
        user, api_key = await add_user(
            async_sessionmaker(engine, expire_on_commit=False), org, name
        )
        print(f"user {user.id}: X-API-Key: {api_key}")  # noqa: T201 (the key, once)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
