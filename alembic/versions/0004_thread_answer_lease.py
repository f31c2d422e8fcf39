"""One answer at a time per thread: a lease on the thread row (store/leases.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 13:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from chatkit_backend.store.migrations import prefixed

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns with no default: PostgreSQL adds them without rewriting the table.
    with op.batch_alter_table(prefixed("threads")) as batch:
        batch.add_column(sa.Column("answer_lease_token", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("answer_lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(prefixed("threads")) as batch:
        batch.drop_column("answer_lease_until")
        batch.drop_column("answer_lease_token")
