"""Initial schema: threads, items, attachments, feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 12:02:29.380001
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

from chatkit_backend.store.migrations import prefixed

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _seq_column(name: str) -> sa.Column[int]:
    """An auto-incrementing key: BIGSERIAL on PostgreSQL, INTEGER PRIMARY KEY on SQLite.

    SQLite only aliases the rowid (and so auto-increments) for a column typed exactly
    INTEGER, hence the variant.
    """
    seq_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    return sa.Column(name, seq_type, autoincrement=True, nullable=False)


def _utc_column(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        prefixed("threads"),
        _seq_column("seq"),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        _utc_column("created_at"),
        _utc_column("updated_at"),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index(
        prefixed("ix_threads_owner_seq"), prefixed("threads"), ["tenant_id", "user_id", "seq"]
    )

    op.create_table(
        prefixed("items"),
        _seq_column("seq"),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("thread_id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        _utc_column("created_at"),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["thread_id"], [prefixed("threads") + ".id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index(prefixed("ix_items_thread_seq"), prefixed("items"), ["thread_id", "seq"])
    op.create_index(prefixed("ix_items_owner"), prefixed("items"), ["tenant_id", "user_id"])

    op.create_table(
        prefixed("attachments"),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("thread_id", sa.String(length=64), nullable=True),
        _utc_column("created_at"),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        prefixed("ix_attachments_owner"), prefixed("attachments"), ["tenant_id", "user_id"]
    )
    op.create_index(prefixed("ix_attachments_thread_id"), prefixed("attachments"), ["thread_id"])

    op.create_table(
        prefixed("feedback"),
        _seq_column("id"),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("thread_id", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        _utc_column("created_at"),
        sa.ForeignKeyConstraint(["thread_id"], [prefixed("threads") + ".id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "user_id", "item_id"),
    )
    op.create_index(prefixed("ix_feedback_thread_id"), prefixed("feedback"), ["thread_id"])


def downgrade() -> None:
    # Children first; dropping a table drops its indexes and constraints with it.
    op.drop_table(prefixed("feedback"))
    op.drop_table(prefixed("attachments"))
    op.drop_table(prefixed("items"))
    op.drop_table(prefixed("threads"))
