"""The private parts of the pinned SDKs this server still relies on, checked against the
code we read when we wrote against them. A new SDK version that changes one fails here,
loudly, instead of somewhere deep in a stream: re-read the function, adapt our module,
then update its fingerprint. Nothing here is patched: the streaming turn is our own
(chat/turn.py, runtime/events.py) on the SDK's public types.
"""

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import chatkit.agents
import chatkit.server
import pytest
from agents import Model

# (what, the function, the fingerprint of its source, the module of ours that relies on it)
TOUCHPOINTS: list[tuple[str, Callable[..., Any], str, str]] = [
    (
        "agents.Model._cleanup_on_run_end",
        Model._cleanup_on_run_end,
        "b248a2572dd77cb9",
        "runtime/recording.py forwards it",
    ),
]


def fingerprint(function: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


@pytest.mark.parametrize(("name", "function", "expected", "user"), TOUCHPOINTS)
def test_private_sdk_code_is_what_we_wrote_against(
    name: str, function: Callable[..., Any], expected: str, user: str
) -> None:
    assert fingerprint(function) == expected, (
        f"{name} changed in the installed SDK ({user}): re-read it before updating this"
    )


def test_nothing_of_the_chatkit_sdk_is_replaced() -> None:
    # Building the app used to swap chatkit's `_merge_generators`; nothing may now.
    from chatkit_backend.app import create_app

    before = dict(vars(chatkit.agents)), dict(vars(chatkit.server))
    create_app()
    assert (dict(vars(chatkit.agents)), dict(vars(chatkit.server))) == before
