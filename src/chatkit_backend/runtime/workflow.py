"""Tool calls and handoffs shown in the thread as workflow tasks, which persist."""

import json
from collections.abc import Callable, Mapping
from typing import Any

from agents import Agent, RunContextWrapper, RunHooks, Tool
from agents.tool_context import ToolContext
from chatkit.agents import AgentContext
from chatkit.types import CustomTask

from chatkit_backend.context import RequestContext

Label = Callable[[dict[str, Any]], str]
Context = AgentContext[RequestContext]


def routed_task(agent_name: str) -> CustomTask:
    return CustomTask(title=f"Routed to {agent_name}", icon="compass", status_indicator="complete")


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class ActivityHooks(RunHooks[Context]):
    """Adds a task when a tool starts, completes it when it ends, and notes handoffs."""

    def __init__(self, labels: Mapping[str, Label]) -> None:
        self.labels = labels
        self._tasks: dict[str, int] = {}

    async def on_tool_start(
        self, context: RunContextWrapper[Context], agent: Agent[Context], tool: Tool
    ) -> None:
        if not isinstance(context, ToolContext):
            return
        label = self.labels.get(tool.name)
        title = label(_arguments(context.tool_arguments)) if label else f"Using {tool.name}…"
        agent_context = context.context
        await agent_context.add_workflow_task(
            CustomTask(title=title, icon="search", status_indicator="loading")
        )
        assert agent_context.workflow_item is not None
        self._tasks[context.tool_call_id] = len(agent_context.workflow_item.workflow.tasks) - 1

    async def on_tool_end(
        self,
        context: RunContextWrapper[Context],
        agent: Agent[Context],
        tool: Tool,
        result: object,
    ) -> None:
        if not isinstance(context, ToolContext):
            return
        index = self._tasks.pop(context.tool_call_id, None)
        workflow = context.context.workflow_item
        if index is None or workflow is None or index >= len(workflow.workflow.tasks):
            return  # the workflow was closed meanwhile; nothing left to update
        task = workflow.workflow.tasks[index]
        if isinstance(task, CustomTask):
            done = task.model_copy(update={"status_indicator": "complete"})
            await context.context.update_workflow_task(done, index)

    async def on_handoff(
        self,
        context: RunContextWrapper[Context],
        from_agent: Agent[Context],
        to_agent: Agent[Context],
    ) -> None:
        await context.context.add_workflow_task(routed_task(to_agent.name))
