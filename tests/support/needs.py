"""What a test needs from the machine: skipped locally when it is missing, failed under
CI, where a skip would hide a gap."""

import os
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.nginx import nginx_binary
from tests.support.postgres import ADMIN_URL, postgres_reachable, server_binaries
from tests.support.redis import REDIS_URL, redis_reachable, server_binary

UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(problem: str) -> NoReturn:
    """Skip the test for `problem`; under CI fail it instead."""
    if UNDER_CI:
        pytest.fail(f"{problem} (CI needs it)")
    pytest.skip(f"{problem}; these cases run under CI")


def require_postgres() -> None:
    if not postgres_reachable():
        unavailable(f"PostgreSQL is not reachable at {ADMIN_URL}")


def require_server_binaries() -> Path:
    """PostgreSQL's server binaries (initdb, pg_ctl), for a cluster of the test's own."""
    found = server_binaries()
    if found is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    return found


def require_redis() -> None:
    if not redis_reachable():
        unavailable(f"Redis is not reachable at {REDIS_URL}")


def require_redis_server() -> str:
    """`redis-server`, for a server of the test's own that it can stop."""
    found = server_binary()
    if found is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    return found


def require_nginx() -> str:
    """nginx, to run the project's docker/nginx/ config in front of served apps."""
    found = nginx_binary()
    if found is None:
        unavailable("nginx is not installed (apt-get install nginx)")
    return found
