"""The employee directory (erp-support agent) and token usage per answer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 12:13:54.067375
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from chatkit_backend.store.migrations import prefixed

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        prefixed("employees"),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("employee_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("department", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("manager_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "employee_id"),
    )
    op.create_table(
        prefixed("usage"),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("thread_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        prefixed("ix_usage_tenant_thread"), prefixed("usage"), ["tenant_id", "thread_id"]
    )


def downgrade() -> None:
    op.drop_index(prefixed("ix_usage_tenant_thread"), table_name=prefixed("usage"))
    op.drop_table(prefixed("usage"))
    op.drop_table(prefixed("employees"))
