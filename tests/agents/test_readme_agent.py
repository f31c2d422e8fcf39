"""The README's "Your own agent" example, run as written: a user copies it first."""

import re
import sys
from pathlib import Path

import pytest
from agents.tool_context import ToolContext
from chatkit.agents import AgentContext

from chatkit_backend.agents.catalog import load_factory
from chatkit_backend.context import Owner, RequestContext

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = README.read_text().split("### Your own agent", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the section has a python block"
    return match.group(1)


async def test_the_readme_agent_factory_and_tool_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "readme_agent.py").write_text(_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "readme_agent", raising=False)
    factory = load_factory("readme_agent:make_agent", None)  # type: ignore[arg-type]
    context = RequestContext(owner=Owner(tenant_id="acme", user_id="ada"))
    agent = factory(context)
    assert agent.instructions == "You help ada of acme."
    tool = agent.tools[0]
    # Only what the tool reads: the request context (a turn adds the thread and store).
    agent_context = AgentContext[RequestContext].model_construct(
        thread=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        request_context=context,
    )
    result = await tool.on_invoke_tool(  # type: ignore[union-attr]
        ToolContext(
            context=agent_context, tool_name="whoami", tool_call_id="call_1", tool_arguments="{}"
        ),
        "{}",
    )
    assert result == "ada"
