"""Attachment uploads: size, upload state, and an index for the cleanup of unsent ones.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from chatkit_backend.store.migrations import prefixed

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(prefixed("attachments"), sa.Column("size_bytes", sa.BigInteger(), nullable=True))
    op.add_column(
        prefixed("attachments"), sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True)
    )
    # Rows from before had no upload step: they count as uploaded when created.
    rows = sa.table(prefixed("attachments"), sa.column("uploaded_at"), sa.column("created_at"))
    op.execute(rows.update().values(uploaded_at=rows.c.created_at))
    op.drop_index(prefixed("ix_attachments_thread_id"), table_name=prefixed("attachments"))
    op.create_index(
        prefixed("ix_attachments_thread_created"),
        prefixed("attachments"),
        ["thread_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index(prefixed("ix_attachments_thread_created"), table_name=prefixed("attachments"))
    op.create_index(prefixed("ix_attachments_thread_id"), prefixed("attachments"), ["thread_id"])
    with op.batch_alter_table(prefixed("attachments")) as batch:
        batch.drop_column("uploaded_at")
        batch.drop_column("size_bytes")
