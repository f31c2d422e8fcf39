"""Graceful shutdown: on SIGTERM, open streams get a grace period, then end like a cancel.

uvicorn handles SIGTERM itself (stop accepting, wait for open connections, then the
lifespan shutdown), but tells the app nothing until every connection has closed, and
when its own timeout runs out it cuts the connections. So the app chains a hook in
front of uvicorn's handler: it learns of the signal at once, refuses new streams, and
ends the streams still open at `grace_seconds`, cleanly and with their partial answers
kept, before uvicorn's timeout (set longer by `serve`) would cut them.
"""

import asyncio
import contextvars
import logging
import signal
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class Drain:
    """The shutdown state of one process, shared by its open streams."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.draining = False
        self._deadline = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self) -> None:
        """Start draining (on the event loop): no new streams; open ones get the grace."""
        if self.draining:
            return
        self.draining = True
        logger.info("shutting down: open streams have %.0f s to finish", self.grace_seconds)
        asyncio.get_running_loop().call_later(self.grace_seconds, self._deadline.set)

    async def deadline(self) -> None:
        """Return when streams still open must end."""
        await self._deadline.wait()

    def hook_signals(self) -> Callable[[], None]:
        """Chain `begin` in front of the current SIGTERM/SIGINT handlers; return an undo."""
        loop = asyncio.get_running_loop()
        previous: dict[int, Handler] = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # A signal handler runs between two bytecodes of whatever was running: hand
            # over to the loop, in a context of its own (not some request's log fields).
            loop.call_soon_threadsafe(self.begin, context=contextvars.Context())
            handler = previous.get(signum)
            if callable(handler):
                handler(signum, frame)

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, on_signal)

        def undo() -> None:
            for signum, handler in previous.items():
                if signal.getsignal(signum) is on_signal and handler is not None:
                    signal.signal(signum, handler)

        return undo
