"""Prometheus metrics: what operators graph and alert on. No HTTP here (api/ serves them).

With several workers, `serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before the workers start (see ops/workers.py): each worker writes its samples there
and a scrape of any worker reports the sum of all. prometheus-client reads that
variable itself, when it is first imported, which is why it is not a setting.
"""

import asyncio
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy.ext.asyncio import AsyncEngine

REQUESTS = Counter(
    "chatkit_requests",
    "ChatKit requests answered, by request type and HTTP status.",
    ["type", "status"],
)
STREAM_SECONDS = Histogram(
    "chatkit_stream_duration_seconds",
    "How long streamed answers stayed open, by request type and how they ended.",
    ["type", "outcome"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
FIRST_DELTA_SECONDS = Histogram(
    "chatkit_time_to_first_delta_seconds",
    "From the start of a stream to the first streamed text of the answer.",
    ["type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60),
)
OPEN_STREAMS = Gauge(
    "chatkit_open_streams",
    "Streams open right now.",
    multiprocess_mode="livesum",
)
MODEL_TOKENS = Counter(
    "chatkit_model_tokens",
    "Model tokens used by answers, by model and kind (input or output).",
    ["model", "kind"],
)
ERRORS = Counter(
    "chatkit_errors",
    "Failures by kind: the error code of a refused request, stream_error for an error "
    "event inside a stream, model_<Exception> for a failed model run.",
    ["kind"],
)
DB_IN_USE = Gauge(
    "chatkit_db_pool_connections_in_use",
    "Database connections checked out of the pool.",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "chatkit_db_pool_size",
    "PostgreSQL connections the pools may open (summed over workers).",
    multiprocess_mode="livesum",
)

STREAMS_REFUSED = Counter(
    "chatkit_streams_refused",
    "Streams refused with 503 before they started, by why: too many open, too many "
    "waiting for the database, or an event loop that lags.",
    ["reason"],
)
STREAMS_WAITING = Gauge(
    "chatkit_streams_waiting",
    "Admitted streams waiting for their first database transaction.",
    multiprocess_mode="livesum",
)
EVENT_LOOP_LAG = Gauge(
    "chatkit_event_loop_lag_seconds",
    "How late the event loop woke up in its last sample (the highest of the workers).",
    multiprocess_mode="livemax",
)
LIMITS_BACKEND_ERRORS = Counter(
    "chatkit_limits_backend_errors",
    "Limit decisions made without Redis (REDIS_URL), which failed or was known to be "
    "down, by operation: request, upload, auth, stream, refresh, release.",
    ["operation"],
)

POOL_SAMPLE_SECONDS = 1.0


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> tuple[bytes, str]:
    """The exposition text and its content type: this process's, or all workers'."""
    if _multiprocess_dir() is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exiting() -> None:
    """Drop this worker's live gauges (open streams, pool) from the shared directory."""
    if _multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


async def watch_pool(engine: AsyncEngine, pool_size: int) -> None:
    """Keep the pool gauges current while the app runs (cancel the task to stop).

    Sampled each second rather than counted on checkout/checkin events: when the
    database restarts, invalidated connections are checked in without a matching
    checkout, and an event count drifts below zero.
    """
    size = pool_size if engine.dialect.name == "postgresql" else 0
    DB_POOL_SIZE.inc(size)
    try:
        while True:
            checked_out = getattr(engine.sync_engine.pool, "checkedout", None)
            if callable(checked_out):
                DB_IN_USE.set(checked_out())
            await asyncio.sleep(POOL_SAMPLE_SECONDS)
    finally:
        DB_POOL_SIZE.dec(size)


def count_error(kind: str) -> None:
    ERRORS.labels(kind=kind).inc()


def count_limits_backend_error(operation: str) -> None:
    LIMITS_BACKEND_ERRORS.labels(operation=operation).inc()


def count_tokens(model: str, input_tokens: int, output_tokens: int) -> None:
    MODEL_TOKENS.labels(model=model, kind="input").inc(input_tokens)
    MODEL_TOKENS.labels(model=model, kind="output").inc(output_tokens)


class StreamObserver:
    """One stream's metrics: open count, time to first text, duration, error events."""

    def __init__(self, chatkit_type: str) -> None:
        self.chatkit_type = chatkit_type
        self.started = time.monotonic()
        self.first_delta_seen = False
        OPEN_STREAMS.inc()

    def text_delta(self) -> None:
        if not self.first_delta_seen:
            self.first_delta_seen = True
            FIRST_DELTA_SECONDS.labels(type=self.chatkit_type).observe(
                time.monotonic() - self.started
            )

    def error_event(self) -> None:
        count_error("stream_error")

    def ended(self, outcome: str) -> None:
        OPEN_STREAMS.dec()
        STREAM_SECONDS.labels(type=self.chatkit_type, outcome=outcome).observe(
            time.monotonic() - self.started
        )
