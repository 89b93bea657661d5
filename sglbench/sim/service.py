"""The simulator's request path, shared by the native and the OpenAI endpoints.

``async with SimService.generation(job) as gen`` admits one parsed request and queues it in the
engine; ``await gen.next()`` returns its :class:`Token` s at the engine's deadlines, following
the server's role:

* ``null``: the engine prefills and decodes.
* ``prefill``: the engine prefills (one token); then the KV transfer is modelled (sleep until
  ``deadline + kv_transfer_time``) and the ``bootstrap_room`` is marked transferred for the decode
  server, which polls it; the one token is returned after the transfer, like SGLang does.
* ``decode``: wait (over HTTP) until the prefill server reports the room transferred, then decode
  with ``kv_ready=True``.

Fault injection (``--sim-fail-rate``, ``--sim-fail-after``) and the ``--sim-trace`` file live here.
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

from sglbench.sim.bootstrap import BootstrapClient, KvTransferError, RoomRegistry, RoomState
from sglbench.sim.config import SimArgs
from sglbench.sim.engine import Engine, GenRequest, TokenEvent, TokenStream
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

    __slots__ = ("_job", "_out", "_stream", "_transfer", "_words", "index")

    def __init__(
        self,
        job: Job,
        stream: TokenStream,
        words: list[int],
        out: OutputVocab,
        transfer: Callable[[Job, TokenEvent], Awaitable[None]] | None,
    ) -> None:
        """Tokens of ``stream`` spelled with ``words`` of ``out``; ``transfer`` after each."""
        self._job = job
        self._stream = stream
        self._words = words
        self._out = out
        self._transfer = transfer
        self.index = 0  # the job's place in its request (set by batches)

    async def next(self) -> tuple[int, Token] | None:
        """The next token when the engine's deadline for it has passed, or None at the end."""
        try:
            event = await self._stream.__anext__()
        except StopAsyncIteration:
            return None
        if self._transfer is not None:
            await self._transfer(self._job, event)
        i = event.index
        out, word = self._out, self._words[i if i < len(self._words) else -1]
        more_due = self._stream.backlog() > 0
        token = Token(
            i, out.ids[word], out.text[word], out.text_json[word], out.id_json[word],
            event.finished, event.deadline, more_due,
        )  # fmt: skip
        return self.index, token


class SimService:
    """Engine, tokenizer, PD hand-over and fault injection behind the HTTP handlers."""

    def __init__(self, args: SimArgs, engine: Engine, tokenizer: SimTokenizer) -> None:
        """Wire the parts; nothing runs until the engine is started."""
        self.args = args
        self.engine = engine
        self.tokenizer = tokenizer
        self.ready = False
        self.tracing = args.sim_trace is not None  # streams stamp their jobs only for the trace
        self.rooms = RoomRegistry() if args.disaggregation_mode == "prefill" else None
        self._bootstrap = BootstrapClient()
        self._fake_transfer = args.disaggregation_transfer_backend == "fake"
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
        await self._bootstrap.close()
        if self._trace is not None:
            self._trace.close()

    def new_job(
        self, rid: str | None, prompt_len: int, max_new_tokens: int, bootstrap: Bootstrap | None
    ) -> Job:
        """A job stamped with its arrival time (the start of TTFT as the server sees it)."""
        return Job(
            rid=rid or uuid.uuid4().hex,
            prompt_len=prompt_len,
            max_new_tokens=max_new_tokens,
            bootstrap=bootstrap,
            arrival=time.monotonic(),  # loop.time()'s clock; uvloop's is cached, in ms
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
        try:
            self._admit(job)
            if role == "decode":
                await self._wait_for_kv(job)
            try:
                stream = self.engine.generate(
                    GenRequest(job.rid, job.prompt_len, job.max_new_tokens, role == "decode")
                )
            except ValueError as exc:
                raise BadRequest(str(exc)) from exc
            # Drawn only once the engine accepted the request: the front end checked the length
            # against the context and the engine against its KV, so this list is bounded.
            count = max(1, job.max_new_tokens)  # a prefill server emits one token even for 0
            words = self._rng.choices(range(len(self.tokenizer.output.ids)), k=count)
            transfer = self._transfer_kv if role == "prefill" else None
            yield Generation(job, stream, words, self.tokenizer.output, transfer)
        except BaseException:
            self._mark_room(job, "failed")
            raise
        finally:
            if stream is not None:
                await stream.aclose()

    def _admit(self, job: Job) -> None:
        """Refuse a job before any work: still starting, or an injected failure."""
        if not self.ready:
            raise NotReady("the server is starting; poll /health_generate until it answers 200")
        if self.args.sim_fail_rate > 0 and self._fail_rng.random() < self.args.sim_fail_rate:
            raise ServerFailure("Internal server error (injected by --sim-fail-rate)")

    async def _wait_for_kv(self, job: Job) -> None:
        if self._fake_transfer:
            return  # SGLang's fake backend moves no KV: the decode side runs alone
        if job.bootstrap is None:
            raise BadRequest(
                "this is a decode server (--disaggregation-mode decode): the request needs"
                " bootstrap_host and bootstrap_room; send it through a PD router"
            )
        b = job.bootstrap
        try:
            await self._bootstrap.wait_transferred(b.host, b.port, b.room)
        except KvTransferError as exc:
            raise ServerFailure(str(exc)) from exc
        job.kv_at = asyncio.get_running_loop().time()

    async def _transfer_kv(self, job: Job, event: TokenEvent) -> None:
        """Prefill side: the KV leaves after the prefill; the room is ready when it arrived."""
        if self._fake_transfer or job.bootstrap is None:
            return
        # The engine's KV link: concurrent transfers share its bandwidth (sim/resources.py).
        arrived = await self.engine.send_kv(job.prompt_len, event.deadline)
        loop = asyncio.get_running_loop()
        delay = arrived - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        self._mark_room(job, "done")
        job.kv_at = loop.time()  # after marking: a later failure must not undo "done"

    def _mark_room(self, job: Job, state: RoomState) -> None:
        if self.rooms is not None and job.bootstrap is not None and job.kv_at is None:
            self.rooms.mark(job.bootstrap.room, state)

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
