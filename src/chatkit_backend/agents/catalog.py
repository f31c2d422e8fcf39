"""Which agent answers: a built-in by name, or a team's own `module:function`."""

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agents import Agent, InputGuardrail, ModelSettings
from agents.models.default_models import get_default_model_settings
from chatkit.agents import AgentContext

from chatkit_backend.agents.assistant import build_assistant
from chatkit_backend.agents.employees import describe_lookup, erp_agent
from chatkit_backend.agents.router import build_router
from chatkit_backend.context import RequestContext
from chatkit_backend.runtime.workflow import Label
from chatkit_backend.store.employees import EmployeeDirectory

ChatAgent = Agent[AgentContext[RequestContext]]
AgentFactory = Callable[[RequestContext], ChatAgent]

BUILT_IN_NAMES = ("assistant", "erp-support", "router")
LABELS: Mapping[str, Label] = {"get_employee": describe_lookup}


def built_in(name: str, employees: EmployeeDirectory) -> AgentFactory:
    """A built-in agent's factory, with the data its tools read handed in."""
    match name:
        case "erp-support":
            return erp_agent(employees)
        case "router":
            return build_router
        case _:
            return build_assistant


def load_factory(spec: str, employees: EmployeeDirectory) -> AgentFactory:
    """Resolve `AGENT`: a built-in name or `package.module:function`; fails fast."""
    if spec in BUILT_IN_NAMES:
        return built_in(spec, employees)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        known = ", ".join(sorted(BUILT_IN_NAMES))
        raise ValueError(f"AGENT must be one of {known} or 'module:function', not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"AGENT {spec!r}: cannot import {module_name} ({exc})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"AGENT {spec!r} does not name a function")
    return factory  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Selection:
    """The agent that starts the run, and the specialist it was forced to, if any."""

    agent: ChatAgent
    routed_to: str | None = None


class AgentSelector:
    """Builds the agent for one request, with guardrails and the composer's tool choice."""

    def __init__(self, factory: AgentFactory, guardrails: list[InputGuardrail[object]]) -> None:
        self.factory = factory
        self.guardrails = guardrails

    def select(self, context: RequestContext, tool_choice: str | None) -> Selection:
        agent = self.factory(context)
        if tool_choice:
            if specialist := _handoff_target(agent, tool_choice):
                return Selection(self._guarded(specialist), routed_to=specialist.name)
            if any(getattr(tool, "name", None) == tool_choice for tool in agent.tools):
                forced = ModelSettings(tool_choice=tool_choice)
                if agent.model_settings != get_default_model_settings():
                    forced = agent.model_settings.resolve(forced)
                agent = agent.clone(model_settings=forced)
        return Selection(self._guarded(agent))

    def _guarded(self, agent: ChatAgent) -> ChatAgent:
        return agent.clone(input_guardrails=[*agent.input_guardrails, *self.guardrails])


def _handoff_target(agent: ChatAgent, choice: str) -> ChatAgent | None:
    for target in agent.handoffs:
        # Handoff objects wrap their agent in a callback; only plain agents can be started.
        if isinstance(target, Agent) and choice.casefold() in (
            target.name.casefold(),
            f"transfer_to_{target.name}".casefold(),
        ):
            return target
    return None
