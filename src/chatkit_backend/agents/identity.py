"""What every built-in agent is told about who it is talking to."""

from chatkit_backend.context import RequestContext


def who_is_asking(context: RequestContext) -> str:
    """A line for the instructions; the tools enforce access, not this text."""
    return (
        f"You are talking to user {context.user_id} of organisation {context.tenant_id} "
        f"(role: {context.role})."
    )
