"""The database tables. Alembic migrations are generated from this metadata.

The row classes declare the tables under their plain names; `tables_for(prefix)` gives
the same tables under TABLE_PREFIX, for a database shared with an app that has tables of
its own (`items`, `usage`...). Queries are built on a `Tables`, never on the classes.
"""

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    and_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import SchemaItem
from sqlmodel import Field, SQLModel

from chatkit_backend.context import Owner
from chatkit_backend.settings import check_table_prefix

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
SEQ_TYPE = BigInteger().with_variant(Integer(), "sqlite")


def _seq_column() -> Column[int]:
    return Column(SEQ_TYPE, primary_key=True, autoincrement=True)


def _utc_column() -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=False)


class _Ours(SQLModel):
    # Our tables on metadata of their own, not SQLModel's shared one: an app that
    # includes our routers may declare its own `items` there, and must not find ours in
    # its autogenerate, nor we its tables in ours.
    metadata = MetaData()


class ThreadRow(_Ours, table=True):
    """A thread's metadata, owned by one user of one tenant."""

    __tablename__ = "threads"
    __table_args__ = (Index("ix_threads_owner_seq", "tenant_id", "user_id", "seq"),)

    # Insertion order, which we control; the SDK's `created_at` is naive local time.
    seq: int | None = Field(default=None, sa_column=_seq_column())
    id: str = Field(max_length=64, unique=True)
    tenant_id: str = Field(max_length=255)
    user_id: str = Field(max_length=255)
    created_at: datetime = Field(sa_column=_utc_column())
    updated_at: datetime = Field(sa_column=_utc_column())
    data: str = Field(sa_column=Column(Text, nullable=False))
    # The lease of the answer in progress (store/turns.py): its token, until when it
    # holds at most, and the server process answering (a `holders` row); all NULL when
    # the thread is not answering.
    answer_lease_token: str | None = Field(default=None, max_length=64)
    answer_lease_until: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    answer_lease_holder: str | None = Field(default=None, max_length=64)


class HolderRow(_Ours, table=True):
    """A running server process that may hold answer leases, and its latest heartbeat.

    A lease whose holder stopped beating is free (store/turns.py): a process that died
    frees its threads within seconds. Removed when the process shuts down cleanly.
    """

    __tablename__ = "holders"

    id: str = Field(max_length=64, primary_key=True)
    beat_at: datetime = Field(sa_column=_utc_column())


class ItemRow(_Ours, table=True):
    """One thread item, stored as the SDK's own JSON so it loads back equal."""

    __tablename__ = "items"
    __table_args__ = (
        Index("ix_items_thread_seq", "thread_id", "seq"),
        Index("ix_items_owner", "tenant_id", "user_id"),
    )

    seq: int | None = Field(default=None, sa_column=_seq_column())
    id: str = Field(max_length=64, unique=True)
    thread_id: str = Field(max_length=64, foreign_key="threads.id", ondelete="CASCADE")
    tenant_id: str = Field(max_length=255)
    user_id: str = Field(max_length=255)
    type: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_utc_column())
    data: str = Field(sa_column=Column(Text, nullable=False))


class AttachmentRow(_Ours, table=True):
    """Attachment metadata; the bytes live in attachment storage under the id."""

    __tablename__ = "attachments"
    __table_args__ = (
        Index("ix_attachments_owner", "tenant_id", "user_id"),
        # A thread's attachments, and the cleanup's "never sent (NULL), older than".
        Index("ix_attachments_thread_created", "thread_id", "created_at"),
    )

    id: str = Field(max_length=64, primary_key=True)
    tenant_id: str = Field(max_length=255)
    user_id: str = Field(max_length=255)
    # Set when a message carrying it is sent; NULL means never sent.
    thread_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_column=_utc_column())
    data: str = Field(sa_column=Column(Text, nullable=False))
    # Declared size until the bytes arrive, then the size stored.
    size_bytes: int | None = Field(default=None, sa_type=BigInteger)
    # NULL while a two-phase upload waits for its bytes: it cannot be sent yet.
    uploaded_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class FeedbackRow(_Ours, table=True):
    """A user's latest rating of one item."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("tenant_id", "user_id", "item_id"),)

    id: int | None = Field(default=None, sa_column=_seq_column())
    tenant_id: str = Field(max_length=255)
    user_id: str = Field(max_length=255)
    thread_id: str = Field(max_length=64, foreign_key="threads.id", ondelete="CASCADE", index=True)
    item_id: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=_utc_column())


class EmployeeRow(_Ours, table=True):
    """A person in a tenant's directory, for the `erp-support` agent's tool."""

    __tablename__ = "employees"

    tenant_id: str = Field(max_length=255, primary_key=True)
    employee_id: int = Field(primary_key=True, sa_type=BigInteger)
    name: str = Field(max_length=255)
    title: str = Field(max_length=255)
    department: str = Field(max_length=255)
    email: str = Field(max_length=255)
    manager_id: int | None = Field(default=None, sa_type=BigInteger)


class UsageRow(_Ours, table=True):
    """Model tokens one answer used, per thread and tenant."""

    __tablename__ = "usage"
    __table_args__ = (Index("ix_usage_tenant_thread", "tenant_id", "thread_id"),)

    id: int | None = Field(default=None, sa_column=_seq_column())
    tenant_id: str = Field(max_length=255)
    user_id: str = Field(max_length=255)
    thread_id: str = Field(max_length=64)
    model: str = Field(max_length=255)
    requests: int
    input_tokens: int = Field(sa_type=BigInteger)
    output_tokens: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(sa_column=_utc_column())


metadata = _Ours.metadata


def table_of(model: type[SQLModel]) -> Table:
    """The Core `Table` behind a table model; SQLModel leaves `__table__` untyped."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


@dataclass(frozen=True)
class Tables:
    """Our tables under one name prefix, and the metadata that holds them."""

    prefix: str
    metadata: MetaData
    threads: Table
    holders: Table
    items: Table
    attachments: Table
    feedback: Table
    employees: Table
    usage: Table


def _copy_under(table: Table, metadata: MetaData, prefix: str) -> Table:
    """`table` as `prefix` + its name in `metadata`, with its foreign keys pointing at the
    prefixed parents and its index names prefixed too: PostgreSQL and SQLite name indexes
    per schema, not per table. (`Table.to_metadata(name=)` keeps foreign keys on the
    parents' old names.)"""
    items: list[SchemaItem] = []
    for column in table.columns:
        copy = column._copy()
        copy.index = None  # added below, under the prefixed name
        items.append(copy)
    for constraint in table.constraints:
        match constraint:
            case ForeignKeyConstraint():
                targets = [prefix + key.target_fullname for key in constraint.elements]
                items.append(
                    ForeignKeyConstraint(
                        constraint.column_keys, targets, ondelete=constraint.ondelete
                    )
                )
            # Those made by `unique=True` come back with the copied columns.
            case UniqueConstraint() if not constraint._column_flag:
                items.append(UniqueConstraint(*constraint.columns.keys()))
    copied = Table(prefix + table.name, metadata, *items)
    for index in table.indexes:
        columns = [copied.c[column.name] for column in index.columns]
        Index(f"{prefix}{index.name}", *columns, unique=index.unique)
    return copied


@functools.cache
def tables_for(prefix: str) -> Tables:
    """Our tables named `prefix` + name (TABLE_PREFIX); "" gives the declared ones."""
    declared = [table_of(model) for model in _MODELS]
    if not check_table_prefix(prefix):
        return Tables("", metadata, *declared)
    prefixed = MetaData(naming_convention=metadata.naming_convention)
    return Tables(prefix, prefixed, *(_copy_under(table, prefixed, prefix) for table in declared))


# In the order of `Tables`' fields.
_MODELS: tuple[type[SQLModel], ...] = (
    ThreadRow,
    HolderRow,
    ItemRow,
    AttachmentRow,
    FeedbackRow,
    EmployeeRow,
    UsageRow,
)
# The tables under their plain names: the default, and what the migrations declare.
UNPREFIXED = tables_for("")


def owned(table: Table, owner: Owner) -> ColumnElement[bool]:
    """The rows of `owner`: every query made for a caller is cut by this."""
    return and_(table.c.tenant_id == owner.tenant_id, table.c.user_id == owner.user_id)


def insert_for(dialect: str, table: Table) -> Any:
    """Return the dialect's `insert()` construct, which has `on_conflict_do_update`."""
    match dialect:
        case "postgresql":
            return postgresql.insert(table)
        case "sqlite":
            return sqlite.insert(table)
        case _:
            raise ValueError(f"unsupported database dialect: {dialect}")
