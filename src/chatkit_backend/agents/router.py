"""`router`: a triage agent that hands the conversation to the right specialist."""

from agents import Agent
from chatkit.agents import AgentContext

from chatkit_backend.agents.assistant import who_is_asking
from chatkit_backend.context import RequestContext

SPECIALISTS = {
    "Billing": "invoices, payments, refunds, prices and subscriptions",
    "Tech": "errors, bugs, installation, logins and anything technical",
    "General": "everything else",
}

TRIAGE_INSTRUCTIONS = (
    "You route conversations. Do not answer yourself: hand the conversation to the one "
    "specialist whose area fits the user's message best."
)


def build_router(context: RequestContext) -> Agent[AgentContext[RequestContext]]:
    """Triage with handoffs to the Billing, Tech and General specialists."""
    identity = who_is_asking(context)
    specialists = [
        Agent[AgentContext[RequestContext]](
            name=name,
            handoff_description=f"Specialist for {area}.",
            instructions=f"You are the {name} specialist; you handle {area}. {identity}",
        )
        for name, area in SPECIALISTS.items()
    ]
    return Agent[AgentContext[RequestContext]](
        name="Triage",
        instructions=f"{TRIAGE_INSTRUCTIONS}\n{identity}",
        handoffs=list(specialists),
    )
