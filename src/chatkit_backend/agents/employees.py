"""`erp-support`: answers questions about colleagues with a directory lookup tool."""

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from agents import Agent, RunContextWrapper, function_tool
from chatkit.agents import AgentContext

from chatkit_backend.agents.assistant import who_is_asking
from chatkit_backend.context import RequestContext
from chatkit_backend.store.employees import Employee, EmployeeDirectory

ChatAgent = Agent[AgentContext[RequestContext]]

INSTRUCTIONS = (
    "You are the ERP support assistant of the user's company. When asked about an "
    "employee by number, look them up with the get_employee tool and answer from its "
    "result only. Never guess employee details."
)


def describe_lookup(arguments: dict[str, Any]) -> str:
    return f"Looking up employee {arguments.get('employee_id', '')}…"


def erp_agent(directory: EmployeeDirectory) -> Callable[[RequestContext], ChatAgent]:
    """The `erp-support` factory: an assistant whose `get_employee` tool reads `directory`."""

    @function_tool
    async def get_employee(
        wrapper: RunContextWrapper[AgentContext[RequestContext]], employee_id: int
    ) -> str:
        """Look up an employee of the user's organisation by employee number.

        Args:
            employee_id: The employee number, e.g. 7.
        """
        # The tenant comes from the verified request, never from the model's arguments.
        tenant_id = wrapper.context.request_context.owner.tenant_id
        employee = await directory.find(tenant_id, employee_id)
        if employee is None:
            return json.dumps({"found": False, "employee_id": employee_id})
        return json.dumps({"found": True, **asdict(employee)})

    def build(context: RequestContext) -> ChatAgent:
        return ChatAgent(
            name="ERP support",
            instructions=f"{INSTRUCTIONS}\n{who_is_asking(context)}",
            tools=[get_employee],
        )

    return build


# Different tenants get different people: a lookup across tenants would show.
DIRECTORIES: dict[str, list[Employee]] = {
    "default": [
        Employee(1, "Ada Lovelace", "Chief Engineer", "R&D", "ada@example.com"),
        Employee(7, "Grace Hopper", "Staff Engineer", "Platform", "grace@example.com", 1),
        Employee(12, "Alan Turing", "Research Scientist", "R&D", "alan@example.com", 1),
        Employee(23, "Katherine Johnson", "Finance Lead", "Finance", "katherine@example.com"),
    ],
    "globex": [
        Employee(7, "Hank Scorpio", "CEO", "Executive", "hank@globex.example"),
    ],
}


async def load_demo_directory(directory: EmployeeDirectory, tenant_id: str) -> int:
    """Replace the tenant's directory with demo people; returns how many."""
    people = DIRECTORIES.get(tenant_id, DIRECTORIES["default"])
    await directory.replace_all(tenant_id, people)
    return len(people)
