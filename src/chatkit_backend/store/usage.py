"""Token usage per answer, for cost reports by thread and tenant (a turn writes its row
in its last transaction, store/turns.py)."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.store.tables import UNPREFIXED, Tables


class UsageLedger:
    """Sums the usage rows on demand."""

    def __init__(self, engine: AsyncEngine, tables: Tables = UNPREFIXED) -> None:
        self.engine = engine
        self.table = tables.usage

    async def thread_totals(self, tenant_id: str, thread_id: str) -> tuple[int, int]:
        """Input and output tokens a thread has used."""
        query = select(
            func.coalesce(func.sum(self.table.c.input_tokens), 0),
            func.coalesce(func.sum(self.table.c.output_tokens), 0),
        ).where(self.table.c.tenant_id == tenant_id, self.table.c.thread_id == thread_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return int(row[0]), int(row[1])
