"""The built-in general assistant."""

from agents import Agent
from chatkit.agents import AgentContext

from chatkit_backend.context import RequestContext

INSTRUCTIONS = (
    "You are a helpful assistant in a chat application. Answer clearly and concisely, "
    "use Markdown where it helps, and say so when you do not know."
)


def who_is_asking(context: RequestContext) -> str:
    """A line for the instructions; the tools enforce access, not this text."""
    owner = context.owner
    return (
        f"You are talking to user {owner.user_id} of organisation {owner.tenant_id} "
        f"(role: {context.role})."
    )


def build_assistant(context: RequestContext) -> Agent[AgentContext[RequestContext]]:
    """A general helpful assistant."""
    return Agent[AgentContext[RequestContext]](
        name="Assistant", instructions=f"{INSTRUCTIONS}\n{who_is_asking(context)}"
    )
