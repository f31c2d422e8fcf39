"""The employee directory behind the `get_employee` tool, scoped by tenant."""

from dataclasses import asdict, dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.store.tables import UNPREFIXED, Tables


@dataclass(frozen=True, slots=True)
class Employee:
    employee_id: int
    name: str
    title: str
    department: str
    email: str
    manager_id: int | None = None


class EmployeeDirectory:
    """Reads and loads employees; every query names the tenant."""

    def __init__(self, engine: AsyncEngine, tables: Tables = UNPREFIXED) -> None:
        self.engine = engine
        self.table = tables.employees

    async def find(self, tenant_id: str, employee_id: int) -> Employee | None:
        """The tenant's employee with that number, if there is one."""
        query = select(
            self.table.c.employee_id,
            self.table.c.name,
            self.table.c.title,
            self.table.c.department,
            self.table.c.email,
            self.table.c.manager_id,
        ).where(self.table.c.tenant_id == tenant_id, self.table.c.employee_id == employee_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else Employee(*row)

    async def replace_all(self, tenant_id: str, employees: list[Employee]) -> None:
        """Make the tenant's directory exactly `employees` (the demo loader uses this)."""
        rows = [{"tenant_id": tenant_id, **asdict(employee)} for employee in employees]
        async with self.engine.begin() as conn:
            await conn.execute(delete(self.table).where(self.table.c.tenant_id == tenant_id))
            if rows:
                await conn.execute(self.table.insert(), rows)
