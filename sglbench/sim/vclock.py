"""A virtual-clock event loop: sleeps cost nothing, so a replay measures the model alone.

The selector never waits: when asyncio asks it to wait ``timeout`` seconds for the next timer,
it advances the loop's clock by that much instead. Only for in-process runs with no real I/O
(engines, shared resources and the replay client on one loop), which then take milliseconds of
CPU per simulated second instead of the simulated seconds.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class _VirtualClockSelector(selectors.DefaultSelector):
    """A selector that, instead of waiting, advances a virtual clock by the timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self.clock += timeout
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """Event loop on virtual time (see the module docstring)."""

    def __init__(self) -> None:
        """A loop whose clock starts at 0 and moves only when every task waits for a timer."""
        self._virtual = _VirtualClockSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        """The virtual clock, in seconds."""
        return self._virtual.clock


def run_virtual(coro: Coroutine[Any, Any, _T], virtual: bool = True) -> _T:
    """Run ``coro`` on virtual time (sleeps cost nothing), or for real if not ``virtual``."""
    if not virtual:
        return asyncio.run(coro)
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
