"""The deployment files: Dockerfile, compose.yaml, .env.example, .dockerignore.

No Docker engine runs here, so these check the files' structure and run the image's
commands (from the same working-directory layout) outside a container instead.
"""

import json
import os
import re
import sqlite3
import tomllib
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.script import ScriptDirectory

from chatkit_backend.cli import _parser as cli_parser
from chatkit_backend.settings import Settings
from chatkit_backend.store.migrations import alembic_config
from chatkit_backend.store.tables import metadata
from tests.deploy.image import FIELDS, image_environment, run_in, tables
from tests.support.processes import CLI, PROJECT_ROOT

SERVE = ["chatkit-backend", "serve", "--host", "0.0.0.0", "--port", "8000"]


# ---- Dockerfile ----


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment and blank lines, even inside a continuation.
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((PROJECT_ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def runtime_stage(dockerfile: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The instructions of the last stage: the image that actually ships."""
    last_from = max(i for i, (keyword, _) in enumerate(dockerfile) if keyword == "FROM")
    return dockerfile[last_from:]


def _arguments(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for name, arguments in stage if name == keyword]


def test_dockerfile_is_multi_stage_on_python_311_slim(dockerfile: list[tuple[str, str]]) -> None:
    bases = _arguments(dockerfile, "FROM")
    assert len(bases) >= 2
    assert all(base.split()[0] == "python:3.11-slim" for base in bases)
    # The runtime stage takes the built environment from the builder.
    assert any(arguments.startswith("--from=") for arguments in _arguments(dockerfile, "COPY"))


def test_dockerfile_builder_has_what_the_wheel_is_built_from(
    dockerfile: list[tuple[str, str]],
) -> None:
    """`pip install .` in the builder fails on a force-included path it was not given."""
    first_from = [i for i, (keyword, _) in enumerate(dockerfile) if keyword == "FROM"]
    builder = dockerfile[first_from[0] : first_from[1]]
    copied = {
        source
        for arguments in _arguments(builder, "COPY")
        for source in arguments.split()[:-1]
        if not source.startswith("--")
    }
    build = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    needed = {"pyproject.toml", "README.md", "src", "LICENSE"}
    needed |= set(build["targets"]["wheel"].get("force-include", {}))
    assert needed <= copied, needed - copied


def test_dockerfile_runs_as_a_non_root_user(runtime_stage: list[tuple[str, str]]) -> None:
    users = _arguments(runtime_stage, "USER")
    assert users, "the runtime stage sets no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_has_the_app_layout(runtime_stage: list[tuple[str, str]]) -> None:
    assert _arguments(runtime_stage, "WORKDIR")[-1] == "/app"
    sources = [arguments.split()[0] for arguments in _arguments(runtime_stage, "COPY")]
    # `migrate` finds alembic.ini, and alembic/ beside it, in the working directory.
    assert "alembic.ini" in sources
    assert "alembic" in sources
    assert any("/app/data" in arguments for arguments in _arguments(runtime_stage, "RUN"))


def test_dockerfile_serves_on_8000(runtime_stage: list[tuple[str, str]]) -> None:
    assert _arguments(runtime_stage, "EXPOSE") == ["8000"]
    assert _arguments(runtime_stage, "STOPSIGNAL") == ["SIGTERM"]
    assert json.loads(_arguments(runtime_stage, "ENTRYPOINT")[-1]) == ["/app/docker/entrypoint.sh"]
    assert any(
        "docker/entrypoint.sh" in arguments for arguments in _arguments(runtime_stage, "COPY")
    )
    command = json.loads(_arguments(runtime_stage, "CMD")[-1])
    assert command == SERVE
    cli_parser().parse_args(command[1:])  # flags the CLI really has


def test_dockerfile_healthcheck_needs_no_curl(runtime_stage: list[tuple[str, str]]) -> None:
    healthchecks = _arguments(runtime_stage, "HEALTHCHECK")
    assert len(healthchecks) == 1
    _, _, exec_form = healthchecks[0].partition("CMD ")
    command = json.loads(exec_form)
    assert command[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8000/healthz" in command[2]
    compile(command[2], "<healthcheck>", "exec")  # valid Python


def test_dockerignore_keeps_secrets_out_and_sources_in() -> None:
    patterns = {
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git", "data"} <= patterns
    # What the Dockerfile copies must stay in the build context.
    assert not {"pyproject.toml", "README.md", "src", "alembic", "alembic.ini"} & patterns


# ---- compose.yaml ----


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    return document


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> volume name, for the short `name:/path` volumes of a service."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/", "~")):
            mounts[target] = source
    return mounts


def test_compose_db_is_postgres_with_a_healthcheck(compose: dict[str, Any]) -> None:
    db = compose["services"]["db"]
    assert db["image"].startswith("postgres:16")
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(db["environment"])
    assert "pg_isready" in db["healthcheck"]["test"]
    assert "/var/lib/postgresql/data" in _named_volumes(db)


def test_compose_app_waits_for_a_healthy_db(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    assert app["build"] == "."
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["restart"] == "unless-stopped"
    url = app["environment"]["DATABASE_URL"]
    assert url.startswith("postgresql+asyncpg://")
    assert "@db:5432/" in url
    # The app must start without a .env file.
    assert {"path": ".env", "required": False} in app["env_file"]


def test_compose_migrates_once_then_serves(compose: dict[str, Any]) -> None:
    migrate, app = compose["services"]["migrate"], compose["services"]["app"]
    # One migration step that the app replicas wait for, instead of each migrating.
    assert migrate["command"] == ["/app/docker/migrate.sh"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert app["environment"]["MIGRATE_ON_START"] == "false"
    assert migrate["environment"]["DATABASE_URL"] == app["environment"]["DATABASE_URL"]
    # Exec form through the entrypoint: the server, not a shell, gets SIGTERM.
    command = app["command"]
    assert command[:2] == ["chatkit-backend", "serve"]
    arguments = cli_parser().parse_args(command[1:])
    assert (arguments.host, arguments.port) == ("0.0.0.0", 8000)
    assert arguments.workers >= 2
    # Longer than the streams' grace (25 s) plus uvicorn's margin (10 s).
    assert app["stop_grace_period"] == "40s"


def test_compose_only_nginx_is_reachable_and_only_from_this_machine(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"nginx"}
    nginx = services["nginx"]
    assert nginx["image"].split(":")[0] == "nginx"
    # With AUTH_MODE=none by default, a port on every interface would serve anyone.
    assert nginx["ports"] == ["127.0.0.1:8000:8080"]
    assert nginx["depends_on"]["app"]["condition"] == "service_healthy"
    mounts = dict(volume.split(":")[:2] for volume in nginx["volumes"])
    assert mounts == {
        "./docker/nginx/nginx.conf": "/etc/nginx/nginx.conf",
        "./docker/nginx/chatkit.conf": "/etc/nginx/chatkit.conf",
    }
    for source in mounts:
        assert (PROJECT_ROOT / source).is_file()
    # The files agree with the services: nginx listens where the port is published
    # and sends to the app's port.
    site = (PROJECT_ROOT / "docker/nginx/chatkit.conf").read_text()
    assert "listen 8080;" in site
    arguments = cli_parser().parse_args(services["app"]["command"][1:])
    assert f"server app:{arguments.port};" in site
    assert "include chatkit.conf;" in (PROJECT_ROOT / "docker/nginx/nginx.conf").read_text()
    # Behind nginx, whose compose address is not fixed, the app believes its header.
    assert services["app"]["environment"]["TRUSTED_PROXIES"] == "*"


def test_compose_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {
        name
        for service in compose["services"].values()
        for name in _named_volumes(service).values()
    }
    assert used
    assert used <= declared
    assert "/app/data" in _named_volumes(compose["services"]["app"])


# ---- compose.replicas.yaml (on top of compose.yaml) ----

SIGNING_KEY = "0123456789abcdef" * 4


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of two files, as far as these files use it: mappings merge
    key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _interpolated(value: str, shell: dict[str, str]) -> str:
    """Compose's `${NAME:-default}` and `${NAME:?error}` with `shell` as the environment."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if shell.get(name):
            return shell[name]
        assert kind == ":-", f"{name} is required: {rest}"
        return rest

    return re.sub(r"\$\{(\w+)(:-|:\?)([^}]*)\}", one, value)


@pytest.fixture(scope="module")
def replicas() -> dict[str, Any]:
    override: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "compose.replicas.yaml").read_text())
    base: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    return _merged(base, override)


def test_replicas_add_redis_and_minio_with_health_checks(replicas: dict[str, Any]) -> None:
    services = replicas["services"]
    assert services["redis"]["image"].split(":")[0] == "redis"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # Counts only: nothing kept on disk.
    assert '""' in json.dumps(services["redis"]["command"])
    assert services["minio"]["image"].startswith("minio/minio:")
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert "/data" in _named_volumes(services["minio"])
    assert set(_named_volumes(services["minio"]).values()) <= set(replicas["volumes"])
    bucket = services["minio-bucket"]
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert bucket["restart"] == "no"
    # Still only nginx is published, and the app can be scaled (no fixed name or port).
    assert {name for name, service in services.items() if service.get("ports")} == {"nginx"}
    assert "container_name" not in services["app"]


def test_replicas_app_uses_redis_and_the_bucket(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = replicas["services"]
    app = services["app"]
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    assert app["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    # compose.yaml's settings stay (the database, the migration step, nginx's header).
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "@db:5432/" in app["environment"]["DATABASE_URL"]
    shell = {"ATTACHMENT_SIGNING_KEY": SIGNING_KEY}
    environment = {k: _interpolated(str(v), shell) for k, v in app["environment"].items()}
    assert environment["REDIS_URL"].startswith("redis://redis:6379/")
    assert environment["ATTACHMENT_STORAGE"] == "s3"
    assert environment["S3_ENDPOINT_URL"] == "http://minio:9000"
    # The bucket minio-bucket makes, with MinIO's own keys.
    assert f"local/{environment['S3_BUCKET']}" in services["minio-bucket"]["command"][0]
    keys = {k: _interpolated(v, shell) for k, v in services["minio"]["environment"].items()}
    assert environment["AWS_ACCESS_KEY_ID"] == keys["MINIO_ROOT_USER"]
    assert environment["AWS_SECRET_ACCESS_KEY"] == keys["MINIO_ROOT_PASSWORD"]
    assert services["minio-bucket"]["environment"] == services["minio"]["environment"]
    # Every replica must sign links with one key: without it compose refuses to start.
    with pytest.raises(AssertionError, match="ATTACHMENT_SIGNING_KEY is required"):
        _interpolated(app["environment"]["ATTACHMENT_SIGNING_KEY"], {})
    # What the app would make of it: valid settings, with the limits in Redis.
    for key in list(os.environ):
        if key.lower() in FIELDS:
            monkeypatch.delenv(key)
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in environment.items()})
    assert settings.redis_url is not None and settings.attachment_storage == "s3"
    arguments = cli_parser().parse_args(app["command"][1:])
    assert arguments.port == 8000  # nginx's upstream (`server app:8000;`) reaches each


# ---- .env.example ----


def _example_settings() -> list[tuple[str, str]]:
    """(NAME, value) for each setting line, commented out or not."""
    settings: list[tuple[str, str]] = []
    for raw in (PROJECT_ROOT / ".env.example").read_text().splitlines():
        line = raw.removeprefix("#").strip()
        name, equals, value = line.partition("=")
        if equals and name.isidentifier() and name.isupper():
            settings.append((name, value))
    return settings


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the real environment leaks into a Settings() built by the test."""
    for key in list(os.environ):
        if key.lower() in FIELDS:
            monkeypatch.delenv(key)


def test_env_example_lists_exactly_the_settings() -> None:
    names = [name.lower() for name, _ in _example_settings()]
    assert len(names) == len(set(names)), "a setting is listed twice"
    assert set(names) - FIELDS == set(), "listed but not a setting"
    assert FIELDS - set(names) == set(), "a setting is missing"


@pytest.mark.usefixtures("clean_environment")
def test_env_example_shows_the_real_defaults(tmp_path: Path) -> None:
    defaults = Settings(_env_file=None).model_dump()
    # A copy used as is changes nothing ...
    untouched = Settings(_env_file=PROJECT_ROOT / ".env.example")
    assert untouched.model_dump() == defaults
    # ... and neither does uncommenting every line, blank ones (unset) included.
    uncommented = tmp_path / ".env"
    uncommented.write_text("".join(f"{n}={v}\n" for n, v in _example_settings()))
    assert Settings(_env_file=uncommented).model_dump() == defaults


# ---- the image's commands, run outside Docker ----


@pytest.mark.slow
def test_migrate_command_from_the_image_layout(image_layout: Path, tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    environment = image_environment(DATABASE_URL=f"sqlite+aiosqlite:///{database}")

    # Twice: compose runs `migrate` on every start, so it must be a no-op when current.
    for _ in range(2):
        result = run_in(image_layout, CLI, "migrate", env=environment)
        assert result.returncode == 0, result.stderr

    with closing(sqlite3.connect(database)) as connection:
        (version,) = connection.execute(
            "SELECT version_num FROM chatkit_alembic_version"
        ).fetchone()
    assert set(metadata.tables) <= tables(database)
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
