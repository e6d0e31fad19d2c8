"""A virtual clock for the event loop: time moves only when every task waits.

`VirtualClockLoop` never sleeps: when nothing is ready it jumps to the next timer, so the real
`asyncio.sleep`, `wait_for` and `loop.time()` in the consumer run in simulated time, and an hour
of it passes in milliseconds. `virtual_time` patches `time.monotonic` and `time.time` for the
stages that read them (each reads its clock when it is built). One thread, no I/O: a run is a
function of its seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
WALL_START_S = 1_800_000_000.0  # the simulated wall clock's start (2027-01-15)


class _NoWaitSelector(selectors.DefaultSelector):
    """Polls the loop's own wake-up pipe without blocking, and advances time instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # Nothing in a run does I/O or wakes the loop from another thread (callbacks queued
        # with call_soon_threadsafe are on the ready queue already), so no real select is
        # needed: a call with nothing ready only moves time to the next timer.
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing ready and no timer set")
        # At least a microsecond, as a real clock always moves between two turns of the loop:
        # a timer 1e-14 s away would otherwise never be passed (float addition keeps the same
        # time), and code that waits for time to pass while never idle would spin for ever.
        self._loop.now_s += max(timeout, 1e-6)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now_s = 0.0
        super().__init__(selector=_NoWaitSelector(self))

    def time(self) -> float:
        return self.now_s


@contextlib.contextmanager
def virtual_time(loop: VirtualClockLoop) -> Iterator[None]:
    real_monotonic, real_time = time.monotonic, time.time
    time.monotonic = loop.time
    time.time = lambda: WALL_START_S + loop.now_s
    try:
        yield
    finally:
        time.monotonic, time.time = real_monotonic, real_time


async def _cancel_all() -> None:
    me = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() if task is not me]
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)


def run_virtual(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to its end on a fresh virtual-clock loop."""
    loop = VirtualClockLoop()
    try:
        with virtual_time(loop):
            try:
                return loop.run_until_complete(coroutine)
            finally:  # as asyncio.run does: cancel what is left (crashed members) and wait
                loop.run_until_complete(_cancel_all())
    finally:
        loop.close()
