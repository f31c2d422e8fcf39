"""The host's agent: its tool reads the host's own `users` table."""

import json
from collections.abc import Callable

from agents import Agent, RunContextWrapper, function_tool
from chatkit.agents import AgentContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatkit_backend.context import RequestContext
from host.models import User

ChatAgent = Agent[AgentContext[RequestContext]]


def build_agent(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[[RequestContext], ChatAgent]:
    """The factory `ChatKitBackend(agent=...)` takes: one agent per request."""

    @function_tool
    async def my_account(wrapper: RunContextWrapper[AgentContext[RequestContext]]) -> str:
        """The signed-in user's account: name and plan."""
        # The user comes from the host's authentication (identify), never from the model.
        user_id = int(wrapper.context.request_context.owner.user_id)
        async with sessions() as session:
            user = await session.get(User, user_id)
        if user is None:
            return json.dumps({"found": False})
        return json.dumps({"found": True, "name": user.name, "plan": user.plan})

    def build(context: RequestContext) -> ChatAgent:
        return ChatAgent(
            name="Account assistant",
            instructions="You help users of Example Inc. with their account. "
            "Use the my_account tool to see their plan.",
            tools=[my_account],
        )

    return build
