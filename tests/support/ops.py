"""Helpers for the operations tests: request bodies, answer leases, a metric reader,
log lines captured as the app writes them."""

import asyncio
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select

from chatkit_backend.ops.logs import NoTracebacks
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.tables import UNPREFIXED
from tests.support.sse import user_input


def body(type: str, **params: Any) -> dict[str, Any]:
    return {"type": type, "params": params}


def message(thread_id: str, text: str = "again") -> dict[str, Any]:
    return body("threads.add_user_message", thread_id=thread_id, input=user_input(text))


async def lease_of(database_url: str, thread_id: str) -> str | None:
    """The token of the answer lease on a thread, or None while it is free."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            query = select(UNPREFIXED.threads.c.answer_lease_token).where(
                UNPREFIXED.threads.c.id == thread_id
            )
            token: str | None = (await conn.execute(query)).scalar_one_or_none()
            return token
    finally:
        await engine.dispose()


async def wait_for_lease(
    database_url: str, thread_id: str, held: bool, seconds: float = 10
) -> None:
    for _ in range(int(seconds / 0.02)):
        if (await lease_of(database_url, thread_id) is not None) == held:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the lease of {thread_id} never became {'held' if held else 'free'}")


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text; 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(4))
    return 0.0


class LogLines(logging.Handler):
    """Every record formatted as it is emitted (while the request's context is current),
    through the filter every handler of the app has."""

    def __init__(self, formatter: logging.Formatter, only: str = "") -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.addFilter(NoTracebacks())
        if only:
            self.addFilter(logging.Filter(only))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def captured_logs(formatter: logging.Formatter, only: str = "") -> Iterator[LogLines]:
    """The lines the root logger writes in the block, at INFO (the default LOG_LEVEL);
    with `only`, those of that logger and its children (`chatkit_backend`: not httpx's)."""
    lines = LogLines(formatter, only)
    root = logging.getLogger()
    level = root.level
    root.addHandler(lines)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
