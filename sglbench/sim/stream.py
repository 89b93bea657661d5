"""Token delivery shared by both HTTP front ends: the one SSE stream loop, and collecting.

A front end (native ``/generate``, OpenAI ``/v1/*``) supplies only its wire format, a
:class:`StreamFormat`; the loop here decides when a chunk goes out (``--stream-interval``, and
catching up when the reader fell behind, see :func:`held_back`), writes it, stamps the job for
the trace, and ends the stream (``[DONE]``) or reports an error the way the format says.
Response headers go out with the first chunk, so a request the engine refuses before its first
token still gets a proper HTTP status.

Cost per streamed token is what limits how many streams the simulator can serve on time (see
``benchmarks/sim_overhead.py``), so the path of a token is kept short: the loop reads the
engine's stream directly (no generator layers), the formats assemble frames from pieces made
once per request, and after the headers each event goes to the socket in one ``write`` with its
HTTP chunk framing (aiohttp's writer costs several microseconds a call on top). Every event is
still its own HTTP chunk, exactly as aiohttp (and SGLang's server) would frame it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web

from sglbench.sim.engine import EngineStopped
from sglbench.sim.service import Job, RequestError, ServerFailure, SimService, Token

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"
_HIGH_WATER = 256 * 1024  # bytes queued for a slow reader before its stream waits
_DRAIN_POLL_S = 0.005


def json_str(text: str) -> str:
    """``text`` as a JSON string the way orjson/serde write it (UTF-8, not ``\\u`` escapes)."""
    return json.dumps(text, ensure_ascii=False)


def sse(payload: str) -> bytes:
    """One SSE event."""
    return f"data: {payload}\n\n".encode()


class StreamFormat(Protocol):
    """One API's SSE events for one request (its jobs are numbered 0..n-1)."""

    def add(self, index: int, token: Token) -> None:
        """Record a token of job ``index`` (every token, also those sent with a later chunk)."""

    def events(self, index: int, token: Token, now: float) -> tuple[bytes, ...]:
        """The SSE events (one HTTP chunk each) that carry job ``index``'s output to ``token``."""

    def error_event(self, failure: RequestError) -> bytes:
        """The SSE event of an error after the stream started."""

    def error_response(self, failure: RequestError) -> web.Response:
        """The HTTP error response of a request that failed before its first chunk."""

    def closing(self) -> tuple[bytes, ...]:
        """The events that go out just before ``[DONE]`` (finish or usage chunks, or none)."""


class TokenSource(Protocol):
    """The tokens of a request's jobs as they come: ``(job index, token)``, None at the end."""

    async def next(self) -> tuple[int, Token] | None:
        """The next token of any job."""


def held_back(token: Token, interval: int) -> bool:
    """Whether ``token`` goes out with a later chunk instead of its own.

    ``--stream-interval N``: one chunk per N tokens, as in SGLang. And a reader that fell behind
    the engine (the next token is already due: this machine's CPU, not the model, is late) sends
    only the newest state, as SGLang's tokenizer manager does when several outputs queued up.
    Chunks carry the cumulative text and ``completion_tokens``, so nothing is lost; SGLang's bench
    client splits a chunk's gap evenly over its new tokens, so a merged chunk leaves its mean
    ITL unchanged and turns a late burst (gaps near 0, then one long gap) into even gaps.
    """
    if token.finished:
        return False
    return token.more_due or (token.index + 1) % interval != 0


class _Merged:
    """Tokens of several jobs (a batch), each job pumped by its own task into one queue."""

    def __init__(self, service: SimService, jobs: list[Job]) -> None:
        self._queue: asyncio.Queue[tuple[int, Token] | BaseException | None] = asyncio.Queue()
        self._remaining = len(jobs)
        self.tasks = [asyncio.create_task(self._pump(service, i, j)) for i, j in enumerate(jobs)]

    async def _pump(self, service: SimService, index: int, job: Job) -> None:
        try:
            async with service.generation(job) as gen:
                gen.index = index
                while (item := await gen.next()) is not None:
                    self._queue.put_nowait(item)
            self._queue.put_nowait(None)
        except Exception as exc:
            self._queue.put_nowait(exc)

    async def next(self) -> tuple[int, Token] | None:
        while self._remaining:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                return item
            self._remaining -= 1
        return None


@contextlib.asynccontextmanager
async def token_source(service: SimService, jobs: list[Job]) -> AsyncIterator[TokenSource]:
    """The tokens of ``jobs``; leaving the block aborts the jobs that are not done."""
    if len(jobs) == 1:  # the common case: read the engine's stream directly
        async with service.generation(jobs[0]) as gen:
            yield gen
        return
    merged = _Merged(service, jobs)
    try:
        yield merged
    finally:
        for task in merged.tasks:
            task.cancel()


class TextState:
    """Cumulative output of one job."""

    __slots__ = ("ids", "text")

    def __init__(self) -> None:
        """Start empty."""
        self.ids: list[int] = []
        self.text = ""

    def add(self, token: Token) -> None:
        """Append a token."""
        self.ids.append(token.token_id)
        self.text += token.text


async def collect(service: SimService, jobs: list[Job]) -> list[TextState]:
    """The whole output of every job (non-streaming answers); engine errors propagate."""
    states = [TextState() for _ in jobs]
    async with token_source(service, jobs) as tokens:
        while (item := await tokens.next()) is not None:
            i, token = item
            states[i].add(token)
            jobs[i].deadlines.append(token.deadline)
    return states


class _Sink:
    """Writes a stream's events: the first through aiohttp (it sends the headers with them),
    the rest straight to the socket, each event framed as its own HTTP chunk."""

    def __init__(self, request: web.Request, resp: web.StreamResponse) -> None:
        self._request = request
        self._resp = resp
        self._transport: asyncio.Transport | None = None
        self._chunked = False

    def write(self, events: tuple[bytes, ...]) -> bool:
        """Write straight to the socket; False if the headers are not out yet (use ``send``).

        Raises:
            ConnectionResetError: the client closed the connection.
        """
        transport = self._transport
        if transport is None:
            return False
        if transport.is_closing():
            raise ConnectionResetError("the client closed the stream")
        if not self._chunked:
            transport.write(b"".join(events))
        elif len(events) == 1:
            transport.write(b"%x\r\n%b\r\n" % (len(events[0]), events[0]))
        else:
            transport.write(b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events))
        return True

    def backlogged(self) -> bool:
        """Whether the client reads slower than we write (its socket buffer is full)."""
        transport = self._transport
        return transport is not None and transport.get_write_buffer_size() > _HIGH_WATER

    async def drain(self) -> None:
        """Wait while the client does not keep up (rare: a reader that stalls)."""
        while self.backlogged():
            await asyncio.sleep(_DRAIN_POLL_S)

    async def send(self, events: tuple[bytes, ...]) -> None:
        """Write, then wait while the client does not keep up."""
        if not self.write(events):
            await self.send_first(events)
        await self.drain()

    async def send_first(self, events: tuple[bytes, ...]) -> None:
        """Prepare the response and write through aiohttp, which sends the headers too."""
        resp = self._resp
        if not resp.prepared:
            await resp.prepare(self._request)
        for event in events:
            await resp.write(event)
        if events:  # the headers are out: from now on, straight to the socket
            self._chunked = resp.headers.get("Transfer-Encoding") == "chunked"
            self._transport = self._request.transport

    async def end(self, events: tuple[bytes, ...]) -> None:
        await self.send(events)
        await self._resp.write_eof()


async def stream_sse(
    request: web.Request, service: SimService, jobs: list[Job], fmt: StreamFormat
) -> web.StreamResponse:
    """Stream the jobs' tokens as SSE events in ``fmt``, then ``[DONE]``."""
    resp = web.StreamResponse(headers=SSE_HEADERS)
    sink = _Sink(request, resp)
    interval = service.args.stream_interval
    trace = service.tracing
    try:
        async with token_source(service, jobs) as tokens:
            while (item := await tokens.next()) is not None:
                i, token = item
                fmt.add(i, token)
                if held_back(token, interval):
                    jobs[i].coalesced += token.more_due
                    continue
                now = time.monotonic()  # the clock of loop.time(), which uvloop caches in ms
                events = fmt.events(i, token, now)
                if not sink.write(events):  # no await on the common path
                    await sink.send_first(events)
                elif sink.backlogged():
                    await sink.drain()
                if trace:
                    jobs[i].sent.append(time.monotonic())
                    jobs[i].deadlines.append(token.deadline)
    except (RequestError, EngineStopped) as exc:
        failure = exc if isinstance(exc, RequestError) else ServerFailure(str(exc))
        if not resp.prepared:
            return fmt.error_response(failure)
        await sink.send((fmt.error_event(failure),))
    except ConnectionResetError:
        return resp  # the client went away; leaving the source aborted the request
    await sink.end((*fmt.closing(), DONE))
    return resp
