"""A bad setting's error names the setting and the reason, never a value: started
outside the CLI (uvicorn, `create_app`), pydantic's own text is what gets printed."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chatkit_backend.settings import Settings

# Secret-looking values, each with a tail that must never show.
KEY = "f3a9c0d27be14e58a6d1c9b0e2f47a3d-TAIL-OF-THE-SIGNING-KEY"
JWT = "e7b1c94d02a6f3581d9c7e2b4a6f0d13-TAIL-OF-THE-JWT-SECRET"
API_KEY = "sk-live-0123456789abcdef-TAIL-OF-THE-API-KEY"
SECRETS = (KEY, JWT, API_KEY)


def _shows_a_secret(text: str) -> bool:
    # pydantic cuts long inputs to their start and end (`'sqlite+...AIL-OF-THE-KEY'`):
    # any 8 characters in a row of a secret count.
    return any(secret[i : i + 8] in text for secret in SECRETS for i in range(len(secret) - 7))


@pytest.mark.parametrize(
    "bad",
    [
        {"attachment_signing_key": "short-TAIL-OF-IT"},  # a field's own check
        {"database_pool_size": "TAIL-OF-A-NUMBER"},  # a type error quotes the input
        {"llm_provider": "gemini"},  # a check of the whole: pydantic quoted every input
        {"jwt_secret": "TAIL-OF-A-SHORT-ONE"},
    ],
)
def test_a_settings_error_shows_no_value(bad: dict[str, Any]) -> None:
    given = {"attachment_signing_key": KEY, "jwt_secret": JWT, "openai_api_key": API_KEY, **bad}
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **given)
    shown = f"{caught.value}\n{caught.value!r}"
    assert not _shows_a_secret(shown), shown
    assert "input_value" not in shown


def test_uvicorn_started_with_a_bad_setting_prints_no_secret(tmp_path: Path) -> None:
    # The factory `serve` uses, run the way a deployment might without the CLI.
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "ATTACHMENT_SIGNING_KEY": KEY,
        "OPENAI_API_KEY": API_KEY,
        "JWT_SECRET": JWT,
        "LLM_PROVIDER": "gemini",  # without GEMINI_API_KEY: refused at start
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "--port", "0"]
    result = subprocess.run(
        [*command, "chatkit_backend.app:create_served_app"],
        env=env,
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "GEMINI_API_KEY" in output, output
    assert not _shows_a_secret(output), output
