"""The wheel carries what an installation needs (static files, migrations, py.typed), and
a fresh environment with only the wheel runs the embedded example."""

import importlib.util
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.processes import PROJECT_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Without hatchling here, pip fetches the build backend.
    has_backend = importlib.util.find_spec("hatchling") is not None
    isolation = ["--no-build-isolation"] if has_backend else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            *isolation,
            "-w",
            str(out),
            str(PROJECT_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("chatkit_backend-*.whl")
    return built


def test_the_wheel_carries_static_files_migrations_and_types(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "chatkit_backend/py.typed" in names
    for page_file in ("index.html", "app.js", "style.css"):
        assert f"chatkit_backend/web/{page_file}" in names
    assert "chatkit_backend/migrations/env.py" in names
    shipped = {name for name in names if name.startswith("chatkit_backend/migrations/versions/")}
    in_source = {
        f"chatkit_backend/migrations/versions/{path.name}"
        for path in (PROJECT_ROOT / "alembic" / "versions").glob("*.py")
    }
    assert shipped == in_source
    assert not [name for name in names if "__pycache__" in name]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert "Classifier: Typing :: Typed" in text


# Run in the fresh environment, from a folder with no alembic.ini: migrate the host's
# tables and ours, then the host app answers through /api (a list, a streamed new thread).
EXAMPLE_RUN = """
import asyncio, pathlib, sys
import chatkit_backend
assert "site-packages" in chatkit_backend.__file__, chatkit_backend.__file__
import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from chatkit_backend import Settings
from host.main import create_app
from host.migrate import upgrade_all
from host.users import add_user

url = "sqlite+aiosqlite:///" + str(pathlib.Path("host.db").resolve())
upgrade_all(url)

async def main():
    engine = create_async_engine(url)
    _, key = await add_user(async_sessionmaker(engine, expire_on_commit=False), "Acme", "ada")
    await engine.dispose()
    app = create_app(Settings(_env_file=None, database_url=url, attachments_dir="files"))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=transport, base_url="http://example.test"
    ) as http:
        body = {"type": "threads.list", "params": {}}
        assert (await http.post("/api/chatkit", json=body)).status_code == 401
        ok = await http.post("/api/chatkit", json=body, headers={"X-API-Key": key})
        assert ok.status_code == 200, ok.text
        text = {"type": "input_text", "text": "hello from the wheel"}
        create = {"type": "threads.create", "params": {"input": {
            "content": [text], "attachments": [], "inference_options": {}}}}
        streamed = await http.post("/api/chatkit", json=create, headers={"X-API-Key": key})
        assert streamed.headers["content-type"].startswith("text/event-stream"), streamed.text
        assert "thread.created" in streamed.text and "thread.item.done" in streamed.text
        assert '"type":"error"' not in streamed.text, streamed.text
        ready = await http.get("/api/readyz")
        assert ready.json() == {"status": "ready"}, ready.text
    print("example ok")

asyncio.run(main())
"""


def test_a_fresh_environment_with_the_wheel_runs_the_example(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    # The dependencies from this environment, not downloaded again; the source tree's
    # package stays out of reach (no src/ on the path).
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "zz_test_dependencies.pth").write_text("\n".join(deps) + "\n")
    workdir = tmp_path / "run"
    workdir.mkdir()
    environment = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT / "examples" / "embedded"),
        "PYTHONSAFEPATH": "1",
    }
    environment.pop("DATABASE_URL", None)
    result = subprocess.run(
        [str(python), "-c", EXAMPLE_RUN],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "example ok" in result.stdout
