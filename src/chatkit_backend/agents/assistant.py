"""The built-in general assistant."""

from agents import Agent
from chatkit.agents import AgentContext

from chatkit_backend.agents.identity import who_is_asking
from chatkit_backend.context import RequestContext

INSTRUCTIONS = (
    "You are a helpful assistant in a chat application. Answer clearly and concisely, "
    "use Markdown where it helps, and say so when you do not know."
)


def build_assistant(context: RequestContext) -> Agent[AgentContext[RequestContext]]:
    """A general helpful assistant."""
    return Agent[AgentContext[RequestContext]](
        name="Assistant", instructions=f"{INSTRUCTIONS}\n{who_is_asking(context)}"
    )
