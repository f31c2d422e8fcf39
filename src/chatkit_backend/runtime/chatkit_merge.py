"""chatkit's `_merge_generators`, without leaving its reads running when the merge ends.

`stream_agent_response` (chatkit 1.6) merges the Agents SDK's event stream with the
context's event queue by reading each in a task. When the merge ends early (the model
call failed, or the client went away and the answer was cancelled), the SDK's version
leaves the other read running. The reliability suite found the results: after a client
hung up, the model call streamed on to its end; and every such read was later logged as
"Task was destroyed but it is pending" or "Task exception was never retrieved".

This version cancels the reads still waiting (cancelling the Agents SDK's read cancels
the run, as its `stream_events` intends) and collects their outcomes. `install()`, called
by `create_app`, puts it in place of the SDK's, which `stream_agent_response` looks up
at each call.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import chatkit.agents

T1 = TypeVar("T1")
T2 = TypeVar("T2")


async def merge_generators(a: AsyncIterator[T1], b: AsyncIterator[T2]) -> AsyncIterator[T1 | T2]:
    """Items of `a` and `b` as they come, until either ends (as the SDK's merge does)."""
    sources: list[AsyncIterator[T1 | T2]] = [a, b]
    reads = {asyncio.ensure_future(_next(source)): source for source in sources}
    try:
        while reads:
            done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
            ended = False
            for read in done:
                source = reads.pop(read)
                try:
                    item = read.result()
                except StopAsyncIteration:
                    ended = True
                    continue
                yield item
                reads[asyncio.ensure_future(_next(source))] = source
            if ended:
                # Like the SDK: what the other source already produced still goes out.
                for read in [read for read in reads if read.done()]:
                    del reads[read]
                    if not read.cancelled() and read.exception() is None:
                        yield read.result()
                return
    finally:
        for read in reads:
            read.cancel()
            read.add_done_callback(_collect)


async def _next(source: AsyncIterator[T1]) -> T1:
    return await anext(source)


def _collect(read: "asyncio.Future[Any]") -> None:
    # A read that ended with an error after the merge stopped has nobody to tell.
    if not read.cancelled():
        read.exception()


# The SDK's own, as imported; tests fingerprint it against the version we read.
SDK_MERGE_GENERATORS = chatkit.agents._merge_generators


def install() -> None:
    """Put `merge_generators` in place of the SDK's (`create_app` calls this)."""
    chatkit.agents._merge_generators = merge_generators
