"""The reliability suite's shared server, answering with the session's fake model
upstream (`fake_server`, `fake`: tests/conftest.py).

Starting a server and migrating its database costs seconds; the tests that can share
one do, each as users of its own (the server runs with JWT auth). The crash test kills
its server and has its own. The line of figures at the end of a run is printed by
tests/conftest.py, which gathers them from every xdist worker.
"""

from collections.abc import Iterator

import pytest

from tests.reliability.kit import MAX_BODY, POOL, SECRET, SLOTS
from tests.reliability.servers import served_on_postgres
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import ServerProcess


@pytest.fixture(scope="session")
def served(
    fake_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        "AUTH_MODE": "jwt",
        "JWT_SECRET": SECRET,
        "DATABASE_POOL_SIZE": str(POOL),
        "MAX_STREAMS_PER_USER": str(SLOTS),
        "MAX_BODY_BYTES": str(MAX_BODY),
        "RATE_LIMIT_PER_MINUTE": "1000000",
    }
    path = tmp_path_factory.mktemp("served")
    with served_on_postgres(path, fake_server.base_url, **env) as served:
        yield served
