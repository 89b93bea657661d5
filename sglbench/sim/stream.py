"""Token delivery shared by both HTTP front ends: the one SSE stream loop, and collecting.

A front end (native ``/generate``, OpenAI ``/v1/*``) supplies only its wire format, a
:class:`StreamFormat`; the loop here decides when a chunk goes out (``--stream-interval``, and
catching up when the reader fell behind, see :func:`held_back`), writes it, stamps the job for
the trace, and ends the stream (``[DONE]``) or reports an error the way the format says.
Response headers go out with the first chunk, so a request the engine refuses before its first
token still gets a proper HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Protocol

from aiohttp import web

from sglbench.sim.engine import EngineStopped
from sglbench.sim.service import Job, RequestError, ServerFailure, SimService, Token

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"


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


async def merged(service: SimService, jobs: list[Job]) -> AsyncGenerator[tuple[int, Token], None]:
    """Tokens of several jobs as they come, tagged with the job's index."""
    if len(jobs) == 1:  # the common case: no queue, no extra tasks
        async with contextlib.aclosing(service.run(jobs[0])) as tokens:
            async for token in tokens:
                yield 0, token
        return
    queue: asyncio.Queue[tuple[int, Token | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, job: Job) -> None:
        try:
            async with contextlib.aclosing(service.run(job)) as tokens:
                async for token in tokens:
                    queue.put_nowait((i, token))
            queue.put_nowait((i, None))
        except Exception as exc:
            queue.put_nowait((i, exc))

    tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
    try:
        remaining = len(jobs)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()


class TextState:
    """Cumulative output of one job, kept JSON-escaped so a chunk costs no re-encoding."""

    __slots__ = ("ids", "ids_json", "text", "text_json")

    def __init__(self) -> None:
        """Start empty."""
        self.ids: list[int] = []
        self.text = ""
        self.text_json = ""
        self.ids_json = ""

    def add(self, token: Token) -> None:
        """Append a token."""
        self.ids.append(token.token_id)
        self.text += token.text
        self.text_json += token.text_json
        self.ids_json += f",{token.token_id}" if self.ids_json else str(token.token_id)


async def collect(service: SimService, jobs: list[Job]) -> list[TextState]:
    """The whole output of every job (non-streaming answers); engine errors propagate."""
    states = [TextState() for _ in jobs]
    async with contextlib.aclosing(merged(service, jobs)) as tokens:
        async for i, token in tokens:
            states[i].add(token)
            jobs[i].deadlines.append(token.deadline)
    return states


async def stream_sse(
    request: web.Request, service: SimService, jobs: list[Job], fmt: StreamFormat
) -> web.StreamResponse:
    """Stream the jobs' tokens as SSE events in ``fmt``, then ``[DONE]``."""
    loop = asyncio.get_running_loop()
    resp = web.StreamResponse(headers=SSE_HEADERS)
    interval = service.args.stream_interval
    try:
        async with contextlib.aclosing(merged(service, jobs)) as tokens:
            async for i, token in tokens:
                fmt.add(i, token)
                job = jobs[i]
                if held_back(token, interval):
                    job.coalesced += token.more_due
                    continue
                if not resp.prepared:
                    await resp.prepare(request)
                for event in fmt.events(i, token, loop.time()):
                    await resp.write(event)
                job.sent.append(loop.time())
                job.deadlines.append(token.deadline)
    except (RequestError, EngineStopped) as exc:
        failure = exc if isinstance(exc, RequestError) else ServerFailure(str(exc))
        if not resp.prepared:
            return fmt.error_response(failure)
        await resp.write(fmt.error_event(failure))
    except ConnectionResetError:
        return resp  # the client went away; closing the stream aborted the request
    if not resp.prepared:
        await resp.prepare(request)  # no token (max_new_tokens 0): still a valid stream
    for event in fmt.closing():
        await resp.write(event)
    await resp.write(DONE)
    await resp.write_eof()
    return resp
