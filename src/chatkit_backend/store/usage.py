"""Token usage per answer, for cost reports by thread and tenant (a turn writes its row
in its last transaction, store/turns.py)."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.store.tables import USAGE


class UsageLedger:
    """Sums the usage rows on demand."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def thread_totals(self, tenant_id: str, thread_id: str) -> tuple[int, int]:
        """Input and output tokens a thread has used."""
        query = select(
            func.coalesce(func.sum(USAGE.c.input_tokens), 0),
            func.coalesce(func.sum(USAGE.c.output_tokens), 0),
        ).where(USAGE.c.tenant_id == tenant_id, USAGE.c.thread_id == thread_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return int(row[0]), int(row[1])
