"""Per-request state of the engine's scheduler and the stream a caller reads tokens from.

Kept apart from :mod:`sglbench.sim.engine` (the scheduling policy) because these are the
mechanics every policy needs: a sequence's progress, the queue that hands its tokens to the HTTP
layer, the plan of one step, the generation-throughput window, and the absolute-deadline sleep.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sglbench.sim.engine_types import GenRequest, TokenEvent

END = object()  # queued after a sequence's last event (or when it was dropped)
_THROUGHPUT_WINDOW_STEPS = 40  # SGLang logs gen throughput every 40 decode steps


class Mailbox:
    """The events of one request, from the engine to its reader (a minimal asyncio queue).

    ``asyncio.Queue`` costs several times more per item; the engine puts one item per token.
    """

    __slots__ = ("_end_only", "_items", "_waiter")

    def __init__(self) -> None:
        """Empty, nobody waiting."""
        self._items: deque[object] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._end_only = False

    def put_nowait(self, item: object) -> None:
        """Append ``item`` and wake the reader (only for the end if it waits for the end)."""
        self._items.append(item)
        waiter = self._waiter
        if self._end_only and isinstance(item, TokenEvent):
            return
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> object:
        """The next item, waiting for one if there is none."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._items.popleft()

    async def get_all(self) -> list[object]:
        """Every item up to and including the end marker (or an error), woken only once."""
        self._end_only = True
        while not self._items or isinstance(self._items[-1], TokenEvent):
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        items = list(self._items)
        self._items.clear()
        return items

    def qsize(self) -> int:
        """Items not read yet."""
        return len(self._items)


@dataclass(eq=False)
class Seq:
    """One request inside the engine: what it reserved and how far it got."""

    req: GenRequest
    reserved: int  # KV tokens it needs at most: prompt + its output budget
    ready_at: float
    queue: Mailbox = field(default_factory=Mailbox)
    prefilled: int = 0
    generated: int = 0
    aborted: bool = False
    fill_len: int = 0  # tokens to (re)compute: the prompt, or prompt + output after retraction
    gen_at_fill: int = 0  # tokens generated before the last (re)fill
    retractions: int = 0
    counted_prompt: bool = False

    def __post_init__(self) -> None:
        self.fill_len = self.req.prompt_len

    @property
    def context(self) -> int:
        """Tokens in its KV cache now (computed so far + generated since)."""
        return self.prefilled + self.generated - self.gen_at_fill

    @property
    def needs_fill(self) -> bool:
        """True while its KV must be computed here (a prompt, or a retracted request)."""
        return not self.req.kv_ready or self.retractions > 0


@dataclass
class Step:
    """What one scheduler step computes."""

    admitted: list[Seq] = field(default_factory=list)
    chunks: list[tuple[Seq, int]] = field(default_factory=list)
    decoding: list[Seq] = field(default_factory=list)
    mixed: bool = False  # --enable-mixed-chunk: the decodes ride in the prefill pass


class TokenStream(AsyncIterator[TokenEvent]):
    """Async iterator over one request's tokens. ``aclose()`` aborts the request."""

    def __init__(self, seq: Seq, on_abort: Callable[[Seq], None]) -> None:
        """Read ``seq``'s queue; ``on_abort`` tells the engine the caller went away."""
        self._seq = seq
        self._on_abort = on_abort
        self._done = False

    def backlog(self) -> int:
        """Items already queued and not read yet: > 0 when the reader fell behind the engine.

        Events are queued only once their deadline passed, so a backlog is tokens (or the end
        marker) that are already late.
        """
        return self._seq.queue.qsize()

    async def __anext__(self) -> TokenEvent:
        if self._done:
            raise StopAsyncIteration
        item = await self._seq.queue.get()
        if isinstance(item, TokenEvent):
            return item
        self._done = True
        if isinstance(item, BaseException):
            raise item
        raise StopAsyncIteration

    async def collect(self) -> list[TokenEvent]:
        """Every event of the request, returned once it ended (one wake-up, not one per token).

        Raises:
            EngineStopped: the engine stopped first.
        """
        if self._done:
            return []
        items = await self._seq.queue.get_all()
        self._done = True
        for item in items:
            if isinstance(item, BaseException):
                raise item
        return [item for item in items if isinstance(item, TokenEvent)]

    async def aclose(self) -> None:
        """Abort the request (client went away): its KV is freed at the next step."""
        if not self._done:
            self._done = True
            self._seq.aborted = True
            self._on_abort(self._seq)


class ThroughputWindow:
    """Generation throughput over the last 40 decode steps (SGLang's ``last_gen_throughput``)."""

    def __init__(self) -> None:
        """Start empty (throughput 0)."""
        self._window: deque[tuple[float, int]] = deque(maxlen=_THROUGHPUT_WINDOW_STEPS + 1)
        self.value = 0.0

    def record(self, t: float, tokens: int) -> None:
        """A decode step ending at ``t`` produced ``tokens`` tokens."""
        self._window.append((t, tokens))
        if len(self._window) >= 2:
            span = self._window[-1][0] - self._window[0][0]
            produced = sum(n for _, n in list(self._window)[1:])
            if span > 0:
                self.value = produced / span


async def sleep_until(deadline: float) -> None:
    """Sleep until an absolute ``loop.time()``.

    Always yields, also when already late: otherwise a late engine runs several steps back to
    back and streams receive their tokens in bursts instead of one per step.
    """
    delay = deadline - asyncio.get_running_loop().time()
    await asyncio.sleep(max(0.0, delay))
