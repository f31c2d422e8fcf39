"""Token usage per answer, for cost reports by thread and tenant."""

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.context import RequestContext
from chatkit_backend.store.tables import USAGE


class UsageLedger:
    """Appends one row per answer; sums on demand."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def record(
        self,
        thread_id: str,
        context: RequestContext,
        model: str,
        requests: int,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        row = {
            "tenant_id": context.owner.tenant_id,
            "user_id": context.owner.user_id,
            "thread_id": thread_id,
            "model": model,
            "requests": requests,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "created_at": datetime.now(UTC),
        }
        async with self.engine.begin() as conn:
            await conn.execute(USAGE.insert(), [row])

    async def thread_totals(self, tenant_id: str, thread_id: str) -> tuple[int, int]:
        """Input and output tokens a thread has used."""
        query = select(
            func.coalesce(func.sum(USAGE.c.input_tokens), 0),
            func.coalesce(func.sum(USAGE.c.output_tokens), 0),
        ).where(USAGE.c.tenant_id == tenant_id, USAGE.c.thread_id == thread_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return int(row[0]), int(row[1])
