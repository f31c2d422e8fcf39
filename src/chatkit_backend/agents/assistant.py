"""The built-in general assistant."""

from agents import Agent, Model
from chatkit.agents import AgentContext

from chatkit_backend.context import RequestContext

INSTRUCTIONS = (
    "You are a helpful assistant in a chat application. Answer clearly and concisely, "
    "use Markdown where it helps, and say so when you do not know."
)


def build_assistant(model: Model, context: RequestContext) -> Agent[AgentContext[RequestContext]]:
    """A general helpful assistant, told who it is talking to."""
    return Agent[AgentContext[RequestContext]](
        name="Assistant",
        instructions=f"{INSTRUCTIONS}\nThe user's id is {context.user_id}.",
        model=model,
    )
