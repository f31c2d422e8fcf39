"""Fixtures shared by the whole suite: migrated databases on SQLite and PostgreSQL,
ChatKit clients on them, the fake OpenAI server, and a PostgreSQL cluster of a test's own;
and the reliability suite's line of figures, added up over the xdist workers (`make
pytest` runs the suite in several worker processes, see docs/testing.md)."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatkit_backend.store.migrations import upgrade_to_head
from tests.reliability.kit import FIGURES, LONG
from tests.support.chat_client import ChatClient, chat_client
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.needs import require_postgres, require_server_binaries
from tests.support.postgres import (
    ThrowawayPostgres,
    empty_database,
    fresh_postgres_database,
    sqlite_url,
    throwaway_postgres,
)


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A migrated PostgreSQL database for the whole session."""
    require_postgres()
    with fresh_postgres_database() as url:
        upgrade_to_head(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file for the whole session."""
    url = sqlite_url(tmp_path_factory.mktemp("sqlite"))
    upgrade_to_head(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own with no tables, once per supported database."""
    if request.param == "postgresql":
        require_postgres()
    with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once per supported database."""
    name = "sqlite_database_url" if request.param == "sqlite" else "postgres_database_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[ChatClient]:
    """A ChatKit client for one fresh user, once per database."""
    async with chat_client(database_url) as chat:
        yield chat


@pytest.fixture
async def sqlite_client(sqlite_database_url: str) -> AsyncIterator[ChatClient]:
    """A ChatKit client for one fresh user on SQLite only."""
    async with chat_client(sqlite_database_url) as chat:
        yield chat


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeOpenAI]:
    """The fake OpenAI server, one for the session (see `fake`)."""
    with running_fake_openai() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeOpenAI) -> FakeOpenAI:
    """The fake OpenAI server, its script and records cleared for this test."""
    fake_server.reset()
    return fake_server


@pytest.fixture
def postgres_cluster() -> Iterator[ThrowawayPostgres]:
    """A started PostgreSQL cluster of the test's own, to stop and start at will."""
    with throwaway_postgres(require_server_binaries()) as cluster:
        yield cluster


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker (`make pytest`): the files that start servers (marked `slow`)
    first, each file's tests still together and in order. xdist hands out whole files in
    this order (`--no-loadscope-reorder`), so the many quick files fill in at the end
    instead of one long file running on while the other workers idle."""
    if not hasattr(config, "workerinput"):
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


# ---- the reliability suite's figures (tests/reliability/kit.py), from every worker ----


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker, hand what it measured to the controller, which prints it."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["reliability_figures"] = dict(FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the xdist controller: add each finished worker's figures to the total."""
    FIGURES.update(getattr(node, "workeroutput", {}).get("reliability_figures", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures the suite measured, for the table in docs/reliability.md (see kit.FIGURES)."""
    if FIGURES:
        figures = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in sorted(FIGURES.items()))
        run = "long" if LONG else "fast"
        # Every check that could find a lost item fails its test instead.
        verdict = "see the failures above" if terminalreporter.stats.get("failed") else "0 lost"
        terminalreporter.write_line(f"reliability ({run} run): {figures}; {verdict}")
