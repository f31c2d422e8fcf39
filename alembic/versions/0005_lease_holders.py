"""A thread whose answering process died frees in seconds: lease holders and heartbeats.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from chatkit_backend.store.migrations import prefixed

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        prefixed("holders"),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Nullable with no default: PostgreSQL adds it without rewriting the table. Leases
    # taken before (no holder) still hold until they run out, as they did.
    with op.batch_alter_table(prefixed("threads")) as batch:
        batch.add_column(sa.Column("answer_lease_holder", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(prefixed("threads")) as batch:
        batch.drop_column("answer_lease_holder")
    op.drop_table(prefixed("holders"))
