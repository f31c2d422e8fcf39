"""The private parts of the pinned SDKs this server relies on, checked against the code we
read when we wrote against them. A new SDK version that changes one fails here, loudly,
instead of somewhere deep in a stream: re-read the function, adapt our module, then
update its fingerprint.
"""

import hashlib
import inspect
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chatkit.server
import pytest
from agents import Model

from chatkit_backend.runtime import chatkit_merge

# (what, the function, the fingerprint of its source, the module of ours that relies on it)
TOUCHPOINTS: list[tuple[str, Callable[..., Any], str, str]] = [
    (
        "chatkit.agents._merge_generators",
        chatkit_merge.SDK_MERGE_GENERATORS,
        "29b1fa54aec412b9",
        "runtime/chatkit_merge.py replaces it",
    ),
    (
        "ChatKitServer._process_streaming",
        chatkit.server.ChatKitServer._process_streaming,
        "fc9810db6a54aeca",
        "chat/server.py calls it",
    ),
    (
        "ChatKitServer._process_non_streaming",
        chatkit.server.ChatKitServer._process_non_streaming,
        "3b3395c714f3864e",
        "chat/server.py calls it",
    ),
    (
        "agents.Model._cleanup_on_run_end",
        Model._cleanup_on_run_end,
        "b248a2572dd77cb9",
        "runtime/messages.py forwards it",
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


def test_the_merge_patch_is_installed_by_the_app_not_by_an_import(tmp_path: Path) -> None:
    # A fresh interpreter: in this one, other tests have built apps already.
    script = (
        "import chatkit.agents\n"
        "from chatkit_backend.app import create_app\n"
        "from chatkit_backend.runtime import chatkit_merge\n"
        "assert chatkit.agents._merge_generators is chatkit_merge.SDK_MERGE_GENERATORS\n"
        "create_app()\n"
        "assert chatkit.agents._merge_generators is chatkit_merge.merge_generators\n"
    )
    database = tmp_path / "app.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=60)
