"""The simulator's request path, shared by the native and the OpenAI endpoints.

``async with SimService.generation(job) as gen`` admits one parsed request and queues it in the
engine; ``await gen.next()`` returns its :class:`Token` s at the engine's deadlines, following
the server's role:

* ``null``: the engine prefills and decodes.
* ``prefill``: the engine prefills (one token); then the KV transfer is modelled and the
  ``bootstrap_room`` is marked transferred for the decode server, which polls it; the one token
  is returned after the transfer, like SGLang does (:mod:`sglbench.sim.handover`).
* ``decode``: wait (over HTTP) until the prefill server reports the room transferred, then decode
  with ``kv_ready=True``.

The tokenizer-side metrics (:class:`~sglbench.sim.telemetry.Telemetry`: TTFT, end-to-end
latency, request and token counters, aborts) are observed here, from the HTTP receipt to the
tokens leaving the server; ``flush_cache`` waits for idle as SGLang's does. Fault injection
(``--sim-fail-rate``, ``--sim-fail-after``) and the ``--sim-trace`` file live here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

from sglbench.sim.bootstrap import RoomRegistry, RoomState
from sglbench.sim.config import SimArgs
from sglbench.sim.engine import Engine, GenRequest, TokenEvent, TokenStream
from sglbench.sim.handover import Handover, KvFailed
from sglbench.sim.telemetry import Telemetry
from sglbench.sim.tokenizer import OutputVocab, SimTokenizer

log = logging.getLogger("sglbench.sim")


def _json_line(record: Mapping[str, object]) -> str:
    return json.dumps(record) + "\n"


try:  # orjson writes the trace's long float lists ~10x faster (a benchmark traces every request)
    import orjson

    def _trace_line(record: Mapping[str, object]) -> str:
        return orjson.dumps(record).decode() + "\n"
except ImportError:  # pragma: no cover - orjson is pinned, but the simulator runs without it
    _trace_line = _json_line


class RequestError(Exception):
    """A request that gets an HTTP error with this message; ``status`` is the code."""

    status = 500


class BadRequest(RequestError):
    """The request is invalid: HTTP 400 with this message."""

    status = 400


class ServerFailure(RequestError):
    """The (simulated) server failed the request: HTTP 500 with this message."""

    status = 500


class NotReady(RequestError):
    """The server is still starting: HTTP 503."""

    status = 503


@dataclass(frozen=True)
class Bootstrap:
    """Where a decode server gets a request's KV (added to the body by PD routers)."""

    host: str
    port: int
    room: int


@dataclass
class Job:
    """One generation (one prompt of a possibly batched request)."""

    rid: str
    prompt_len: int
    max_new_tokens: int
    bootstrap: Bootstrap | None = None
    arrival: float = 0.0
    # The engine's deadline of each token (streams: of the last token of each chunk sent).
    deadlines: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)  # when each chunk was written (streams)
    coalesced: int = 0  # streamed tokens that went out in a later chunk (the reader was behind)
    kv_at: float | None = None  # PD: when the KV transfer ended (prefill) or was seen (decode)
    prompt_ids: list[int] | None = None  # the prompt's tokens (for the prefix cache)
    streaming: bool = False  # SGLang's is_streaming label
    cached_tokens: int = 0  # prompt tokens served from a prefix cache (meta_info.cached_tokens)
    first_at: float | None = None  # when its first token left (time.monotonic())
    request: GenRequest | None = None  # what the engine got, once it got it


@dataclass(slots=True)
class Token:
    """One output token as the HTTP layer sends it (treat as read-only).

    Not frozen: one is built per streamed token, and at hundreds of streams a frozen
    dataclass's slower ``__init__`` shows in the server's CPU per token.
    """

    index: int
    token_id: int
    text: str
    text_json: bytes  # ``text`` escaped for a JSON string (no quotes), UTF-8
    id_json: bytes  # ``token_id`` in decimal
    finished: bool
    deadline: float
    more_due: bool  # the next token is already due: the reader is behind the engine


class Generation:
    """One job's tokens, read straight from the engine's stream (no generator in between: at
    hundreds of streams every layer per token shows in the server's CPU)."""

    __slots__ = ("_job", "_on_first", "_out", "_stream", "_transfer", "_words", "done", "index")

    def __init__(
        self,
        job: Job,
        stream: TokenStream,
        words: list[int],
        out: OutputVocab,
        transfer: Callable[[Job, TokenEvent], Awaitable[None]] | None,
        on_first: Callable[[Job], None],
    ) -> None:
        """Tokens of ``stream`` spelled with ``words`` of ``out``; ``transfer`` after each,
        ``on_first`` when the first one leaves."""
        self._job = job
        self._stream = stream
        self._words = words
        self._out = out
        self._transfer = transfer
        self._on_first = on_first
        self.index = 0  # the job's place in its request (set by batches)
        self.done = False  # every token was read

    async def next(self) -> tuple[int, Token] | None:
        """The next token when the engine's deadline for it has passed, or None at the end."""
        try:
            event = await self._stream.__anext__()
        except StopAsyncIteration:
            self.done = True
            return None
        if self._transfer is not None:
            await self._transfer(self._job, event)
        i = event.index
        if i == 0:
            self._on_first(self._job)
        out, word = self._out, self._words[i if i < len(self._words) else -1]
        more_due = self._stream.backlog() > 0
        token = Token(
            i, out.ids[word], out.text[word], out.text_json[word], out.id_json[word],
            event.finished, event.deadline, more_due,
        )  # fmt: skip
        return self.index, token


class SimService:
    """Engine, tokenizer, PD hand-over and fault injection behind the HTTP handlers."""

    def __init__(self, args: SimArgs, engine: Engine, tokenizer: SimTokenizer,
                 telemetry: Telemetry | None = None) -> None:  # fmt: skip
        """Wire the parts (``telemetry``: the engine's); nothing runs until the engine starts."""
        self.args = args
        self.engine = engine
        self.tokenizer = tokenizer
        self.telemetry = telemetry or Telemetry(args.disaggregation_mode, args.model_name)
        self.ready = False
        self.tracing = args.sim_trace is not None  # streams stamp their jobs only for the trace
        self.rooms = RoomRegistry() if args.disaggregation_mode == "prefill" else None
        self.handover = Handover(args, engine, self.telemetry, self.rooms)
        self._fake_transfer = args.disaggregation_transfer_backend == "fake"
        self._active = 0  # jobs between admission and their end (flush_cache needs 0)
        self._flushing = False
        self._rng = random.Random(args.sim_seed)
        self._fail_rng = random.Random(args.sim_seed + 1)
        self._answered = 0
        self._trace: IO[str] | None = None
        self.on_fail_after: Callable[[], None] = lambda: None

    async def start(self) -> None:
        """Start the engine and open the trace file."""
        if self.args.sim_trace is not None:
            self._trace = self.args.sim_trace.open("a", encoding="utf-8")
        await self.engine.start()

    async def close(self) -> None:
        """Stop the engine, the bootstrap client and the trace file."""
        await self.engine.stop()
        await self.handover.close()
        if self._trace is not None:
            self._trace.close()

    def new_job(self, rid: str | None, prompt_len: int, max_new_tokens: int,
                bootstrap: Bootstrap | None, prompt_ids: list[int] | None = None,
                streaming: bool = False) -> Job:  # fmt: skip
        """A job stamped with its arrival time (the start of TTFT as the server sees it)."""
        return Job(
            rid=rid or uuid.uuid4().hex,
            prompt_len=prompt_len,
            max_new_tokens=max_new_tokens,
            bootstrap=bootstrap,
            arrival=time.monotonic(),  # loop.time()'s clock; uvloop's is cached, in ms
            prompt_ids=prompt_ids,
            streaming=streaming,
        )

    @contextlib.asynccontextmanager
    async def generation(self, job: Job) -> AsyncIterator[Generation]:
        """The job admitted and queued in the engine; its tokens come from ``next()``.

        Leaving the block aborts the job in the engine if it is not done, and an error inside
        it fails the job's bootstrap room, so a decode server waiting for it stops at once.

        Raises:
            NotReady: still starting.
            BadRequest: the engine refused the request (too long, bad values) or a decode
                server got a request without bootstrap information.
            ServerFailure: injected failure, or the KV never arrived from the prefill.
        """
        role = self.args.disaggregation_mode
        stream = None
        self._active += 1
        req = job.request = GenRequest(job.rid, job.prompt_len, job.max_new_tokens,
                                       role == "decode", prompt_ids=job.prompt_ids)  # fmt: skip
        try:
            self._admit(job)
            if role == "decode":
                await self._wait_for_kv(job, req)
            try:
                stream = self.engine.generate(req)
            except ValueError as exc:
                raise BadRequest(str(exc)) from exc
            # Drawn only once the engine accepted the request: the front end checked the length
            # against the context and the engine against its KV, so this list is bounded.
            count = max(1, job.max_new_tokens)  # a prefill server emits one token even for 0
            words = self._rng.choices(range(len(self.tokenizer.output.ids)), k=count)
            transfer = self._transfer_kv if role == "prefill" else None
            gen = Generation(job, stream, words, self.tokenizer.output, transfer, self._first)
            yield gen
            if gen.done:
                self._ended(job, completion=count if role == "prefill" else job.max_new_tokens)
            else:
                self.telemetry.aborted()  # the reader stopped early: the client went away
        except KvFailed as exc:  # the room is marked failed already, with the reason
            self._ended(job, completion=0)  # SGLang finishes it with an abort: counted
            raise ServerFailure(str(exc)) from exc
        except BaseException as exc:
            self._mark_room(job, "failed")
            if stream is not None and isinstance(exc, asyncio.CancelledError | ConnectionError):
                self.telemetry.aborted()  # the client went away
            raise
        finally:
            self._active -= 1
            if stream is not None:
                await stream.aclose()

    def _first(self, job: Job) -> None:
        """The job's first token leaves now: TTFT (agg and decode) and its cached tokens."""
        job.first_at = now = time.monotonic()
        if job.request is not None and self.args.disaggregation_mode != "decode":
            job.cached_tokens = job.request.times.cached_tokens
        self.telemetry.first_token(job.streaming, now - job.arrival)

    def _ended(self, job: Job, completion: int) -> None:
        """The job ended (its last token left, or it failed): the tokenizer-side counters."""
        now = time.monotonic()
        decode_s = None if job.first_at is None or not completion else now - job.first_at
        self.telemetry.finished(job.streaming, job.prompt_len, completion, job.cached_tokens,
                                now - job.arrival, decode_s)  # fmt: skip

    async def flush_cache(self, timeout_s: float) -> tuple[bool, str]:
        """Empty the prefix cache once idle, waiting up to ``timeout_s``; (done, why not).

        SGLang's scheduler: without a timeout it flushes only if idle; with one it defers the
        flush until idle or the timeout; a second flush while one waits is refused.
        """
        if self._flushing:
            return False, "Another flush_cache is already in progress."
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._flushing = True
        try:
            while not (self._active == 0 and self.engine.flush_cache()):
                if timeout_s <= 0:
                    return False, ""
                if loop.time() >= deadline:
                    return False, "Timed out waiting for idle state."
                await asyncio.sleep(0.01)  # SGLang checks at every scheduler iteration
            return True, ""
        finally:
            self._flushing = False

    def _admit(self, job: Job) -> None:
        """Refuse a job before any work: still starting, or an injected failure."""
        if not self.ready:
            raise NotReady("the server is starting; poll /health_generate until it answers 200")
        if self.args.sim_fail_rate > 0 and self._fail_rng.random() < self.args.sim_fail_rate:
            raise ServerFailure("Internal server error (injected by --sim-fail-rate)")

    async def _wait_for_kv(self, job: Job, req: GenRequest) -> None:
        if self._fake_transfer:
            return  # SGLang's fake backend moves no KV: the decode side runs alone
        if job.bootstrap is None:
            raise BadRequest(
                "this is a decode server (--disaggregation-mode decode): the request needs"
                " bootstrap_host and bootstrap_room; send it through a PD router"
            )
        b = job.bootstrap
        job.cached_tokens = await self.handover.receive(job.rid, b.host, b.port, b.room,
                                                        job.arrival, req.times)  # fmt: skip
        job.kv_at = asyncio.get_running_loop().time()

    async def _transfer_kv(self, job: Job, event: TokenEvent) -> None:
        """Prefill side: the KV leaves after the prefill; the room is ready when it arrived."""
        if self._fake_transfer or job.bootstrap is None or job.request is None:
            return
        await self.handover.send(job.rid, job.bootstrap.room, job.prompt_len, job.request.times,
                                 event.deadline)  # fmt: skip
        job.kv_at = asyncio.get_running_loop().time()  # a later failure must not undo "done"

    def _mark_room(self, job: Job, state: RoomState) -> None:
        if self.rooms is not None and job.bootstrap is not None and job.kv_at is None:
            self.rooms.mark(job.bootstrap.room, state, cached_tokens=job.cached_tokens)

    def finished(self, job: Job) -> None:
        """Account one answered job: trace line and ``--sim-fail-after``."""
        if self._trace is not None:
            room = job.bootstrap.room if job.bootstrap else None
            record = {
                "rid": job.rid,
                "bootstrap_room": room,
                "role": self.args.disaggregation_mode,
                "arrival": job.arrival,
                "prompt_tokens": job.prompt_len,
                "max_new_tokens": job.max_new_tokens,
                "deadlines": job.deadlines,
                "sent": job.sent,
                "coalesced": job.coalesced,
                "kv_at": job.kv_at,
            }
            self._trace.write(_trace_line(record))
            self._trace.flush()
        self._answered += 1
        after = self.args.sim_fail_after
        if after is not None and self._answered == after:
            log.warning("answered %d requests: exiting as --sim-fail-after asks", after)
            self.on_fail_after()
