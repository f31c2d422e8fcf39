"""Process-wide set-up for `serve` that must happen before the workers start.

Kept apart from ops/metrics.py on purpose: importing prometheus-client fixes its
single- or multi-process mode, so this module must not import it.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_metrics_dir(workers: int) -> Iterator[str | None]:
    """With several workers, a fresh directory where all of them write their metrics.

    Without it each scrape would report whichever worker happened to answer. A
    directory the operator set is used as is (they must empty it between runs).
    """
    if workers <= 1 or os.environ.get(MULTIPROC_VARIABLE):
        yield os.environ.get(MULTIPROC_VARIABLE) or None
        return
    path = tempfile.mkdtemp(prefix="chatkit-metrics-")
    os.environ[MULTIPROC_VARIABLE] = path  # inherited by the spawned workers
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_VARIABLE, None)
        shutil.rmtree(path, ignore_errors=True)
