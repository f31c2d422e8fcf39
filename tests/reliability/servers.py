"""Real `chatkit-backend serve` processes for the reliability suite, answering with the
fake model, on migrated databases (tests/support/processes.py starts, stops and kills
them, and checks their logs for crashes), and the gauges that show them at rest."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from chatkit_backend.store.migrations import upgrade_to_head
from tests.support.ops import metric
from tests.support.postgres import fresh_postgres_database
from tests.support.processes import ServerProcess, serving


@contextmanager
def served_on_postgres(tmp_path: Path, fake_base_url: str, **env: str) -> Iterator[ServerProcess]:
    """A migrated fresh database on the shared PostgreSQL, and a server on it."""
    with fresh_postgres_database() as url, served_on(url, tmp_path, fake_base_url, **env) as s:
        yield s


@contextmanager
def served_on(url: str, tmp_path: Path, fake_base_url: str, **env: str) -> Iterator[ServerProcess]:
    """Migrate the database at `url` and serve on it, answering with the fake model."""
    settings = {
        "DATABASE_URL": url,
        "DATABASE_POOL_SIZE": "5",
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-reliability-" + "0" * 24,
        "OPENAI_BASE_URL": fake_base_url,
        "LLM_MODEL": "fake-model",
        "LLM_TIMEOUT_SECONDS": "1",
        "TITLES": "false",  # a title is one more model request, which would disturb scripts
        **env,
    }
    upgrade_to_head(url)  # what `chatkit-backend migrate` runs, without a process start
    with serving(settings, log_dir=tmp_path) as served:
        yield served


async def gauges_at_rest(served: ServerProcess) -> None:
    """The server's own gauges say no stream is open and no connection checked out
    (the pool gauge is sampled each second)."""

    async def at_rest() -> bool:
        async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as http:
            scrape = (await http.get("/metrics")).text
        open_streams = metric(scrape, "chatkit_open_streams")
        return open_streams == 0 and metric(scrape, "chatkit_db_pool_connections_in_use") == 0

    for _ in range(100):
        if await at_rest():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("streams or database connections still in use after 10 s")
