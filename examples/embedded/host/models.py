"""The host's own tables, on metadata of its own (not chatkit-backend's)."""

import hashlib

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# chatkit-backend's tables sit beside the host's as chatkit_threads, chatkit_items...: its
# TABLE_PREFIX, set in code here (main.py, migrate.py) because the host owns the schema.
CHATKIT_TABLE_PREFIX = "chatkit_"


class Base(DeclarativeBase):
    pass


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    name: Mapped[str] = mapped_column(String(100))
    plan: Mapped[str] = mapped_column(String(20), default="free")
    # Only a digest: a leaked table gives no working key.
    api_key_sha256: Mapped[str] = mapped_column(String(64), unique=True)


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()
