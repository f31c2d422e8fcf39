"""`INSERT ... ON CONFLICT` for the two dialects we support."""

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_for(dialect: str, table: Table) -> Any:
    """Return the dialect's `insert()` construct, which has `on_conflict_do_update`."""
    match dialect:
        case "postgresql":
            return postgresql.insert(table)
        case "sqlite":
            return sqlite.insert(table)
        case _:
            raise ValueError(f"unsupported database dialect: {dialect}")
