"""Continuous-batching engine of the simulator: SGLang's scheduler loop with a clock, not a GPU.

One asyncio task runs the scheduler. Each step (the rules and their SGLang sources are in
:mod:`sglbench.sim.batching` and :mod:`sglbench.sim.timing`):

1. Admit requests in arrival order (FCFS) while SGLang's admission rule lets their KV in
   (prompt + output for ``ignore_eos`` requests, ``new_token_ratio`` of the output otherwise),
   ``--max-running-requests`` allows and the prefill token budget (``--chunked-prefill-size``,
   ``--max-prefill-tokens``) is not spent; a longer prompt is chunked over several steps.
2. Run a prefill pass over the chosen chunks if there are any (prefill first, as SGLang;
   ``--enable-mixed-chunk`` adds the decodes to it); otherwise a decode pass producing one token
   for every running request, after retracting requests if the KV pool cannot hold that token.
   A pass costs its GPU time (CUDA graph up to ``cuda_graph_max_bs``, eager above) and host
   time; the scheduler's CPU time per running request overlaps it. Durations are scaled by
   ``time_scale``, with a small seeded jitter.
3. Sleep until the absolute deadline of the pass (``loop.time()``), never for a relative
   duration, so the server's own CPU time does not add up into latency; then deliver the events
   of the pass. With ``EngineConfig.gpu`` the GPU time is served by a
   :class:`~sglbench.sim.resources.SharedGpu` that other engines use too (two servers on one
   GPU), so their passes stretch each other.

Roles (``--disaggregation-mode``):

* ``null`` (aggregated): prefill and decode share the steps, so every prefill delays every running
  decode; this interference is what PD disaggregation removes.
* ``prefill``: runs the prefill and yields exactly one event (the first token). Only the prompt's
  KV is held and it is freed at once; :meth:`Engine.send_kv` models the transfer on the
  server's :class:`~sglbench.sim.resources.KvLink`.
* ``decode`` with ``kv_ready=True``: no prefill; the request needs KV for prompt and output, emits
  its first token (computed by the prefill server) at admission and one token per decode step.

The engine is idle (awaits an event) when it has no request. It is deterministic given the seed
and the order of arrivals, on a real loop or on :mod:`sglbench.sim.vclock`'s virtual one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from dataclasses import replace

from sglbench.sim import batching, timing
from sglbench.sim.bookkeeping import Bookkeeping
from sglbench.sim.engine_types import (
    DEFAULT_MEM_FRACTION,
    EngineConfig,
    EngineStats,
    EngineStopped,
    GenRequest,
    Role,
    TokenEvent,
    check_request,
    resolve_kv_capacity,
)
from sglbench.sim.profiles import Profile
from sglbench.sim.resources import KvLink, StreamPath
from sglbench.sim.sequence import END, Seq, Step, ThroughputWindow, TokenStream, sleep_until

__all__ = [
    "DEFAULT_CHUNKED_PREFILL_SIZE",
    "DEFAULT_MEM_FRACTION",
    "Engine",
    "EngineConfig",
    "EngineStats",
    "EngineStopped",
    "GenRequest",
    "Role",
    "TokenEvent",
    "TokenStream",
]

DEFAULT_CHUNKED_PREFILL_SIZE = 8192
_MAX_RUNNING_CAP = 4096


class Engine:
    """Continuous-batching scheduler with modelled step times (see module docstring)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        profile = config.profile
        if config.step_overhead_ms is not None:
            eff = replace(profile.efficiency, step_overhead_ms=config.step_overhead_ms)
            profile = replace(profile, efficiency=eff)
        self._profile = profile
        self._max_total = resolve_kv_capacity(config, profile)
        self._max_running = config.max_running_requests or min(
            _MAX_RUNNING_CAP, max(1, self._max_total // 2)
        )
        chunk = config.chunked_prefill_size or DEFAULT_CHUNKED_PREFILL_SIZE
        chunk = chunk if chunk > 0 else 1 << 62  # SGLang: -1 disables chunking
        self._budget = min(chunk, max(1, config.max_prefill_tokens))
        graph = config.cuda_graph_max_bs or timing.cuda_graph_max_bs(profile, config.tp_size)
        self._graph_max_bs = 0 if config.disable_cuda_graph else graph
        self._ratio = batching.NewTokenRatio.for_conservativeness(config.schedule_conservativeness)
        self._rng = random.Random(config.seed)
        self._waiting: deque[Seq] = deque()
        self._prefilling: list[Seq] = []
        self._decoding: list[Seq] = []
        self._handover_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._link: KvLink | None = None
        cost = profile.efficiency.stream_us_per_token * config.time_scale
        self._stream = StreamPath(cost) if cost > 0 else None
        self._prompt_total = 0
        self._gen_total = 0
        self._requests_total = 0
        self.retracted_total = 0
        self._throughput = ThroughputWindow()
        self._book = Bookkeeping(config.role, config.telemetry)  # prefix cache and metrics

    @property
    def max_total_tokens(self) -> int:
        """KV capacity in tokens."""
        return self._max_total

    @property
    def max_running_requests(self) -> int:
        """Most requests admitted at once."""
        return self._max_running

    @property
    def cuda_graph_max_bs(self) -> int:
        """Largest decode batch run as a CUDA graph (0: graphs disabled)."""
        return self._graph_max_bs

    @property
    def profile(self) -> Profile:
        """The profile in effect (with the ``step_overhead_ms`` override applied)."""
        return self._profile

    async def start(self) -> None:
        """Start the scheduler task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine")

    async def stop(self) -> None:
        """Cancel the scheduler; unfinished streams raise :class:`EngineStopped`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        error = EngineStopped("the simulated engine stopped before the request finished")
        for seq in [*self._waiting, *self._prefilling, *self._decoding]:
            seq.queue.put_nowait(error)
        self._waiting.clear()
        self._prefilling.clear()
        self._decoding.clear()
        if self.config.gpu is not None:
            self.config.gpu.close()

    def generate(self, req: GenRequest) -> TokenStream:
        """Queue a request and return the stream of its tokens.

        Raises:
            ValueError: negative ``max_new_tokens``, empty prompt, or a request larger than the
                context length or the KV capacity.
        """
        reserved = check_request(req, self._profile, self.config.role, self._max_total)
        # The scheduler sees a request only after SGLang's single tokenizer process handed it
        # over, one request at a time: a burst of arrivals reaches the scheduler staggered.
        eff = self._profile.efficiency
        scale = self.config.time_scale / 1e3
        now = asyncio.get_running_loop().time()
        self._handover_at = max(
            now + eff.request_latency_ms * scale, self._handover_at + eff.handover_ms * scale
        )
        req.times.recv_at = self._handover_at
        seq = Seq(req=req, reserved=reserved, ready_at=self._handover_at)
        self._waiting.append(seq)
        self._wake.set()
        return TokenStream(seq, self._abort)

    async def send_kv(self, prompt_len: int, start: float, link: KvLink | None = None) -> float:
        """Prefill side: move a prompt's KV posted at ``start``; return when it has arrived.

        Transfers share ``link`` (default: this server's own, from the profile's
        ``link_bandwidth_GBps`` and ``kv_transfer_latency_ms``) as the module docstring of
        :mod:`sglbench.sim.resources` says.
        """
        if link is None:
            if self._link is None:
                eff, gpu = self._profile.efficiency, self._profile.gpu
                self._link = KvLink(gpu.link_bandwidth_GBps, eff.kv_transfer_latency_ms)
            link = self._link
        nbytes = timing.kv_bytes(self._profile, prompt_len)
        return await link.send(nbytes, start, self.config.time_scale)

    def stats(self) -> EngineStats:
        """Current counters."""
        return EngineStats(
            running=len(self._prefilling) + len(self._decoding),
            queued=len(self._waiting),
            prompt_tokens_total=self._prompt_total,
            generation_tokens_total=self._gen_total,
            requests_total=self._requests_total,
            last_gen_throughput=self._throughput.value,
            kv_tokens_used=self._allocated(),
            max_total_tokens=self._max_total,
            kv_evictable_tokens=self._book.evictable,
        )

    def flush_cache(self) -> bool:
        """Empty the prefix cache; False (nothing done) while requests are in the engine."""
        return not (self._waiting or self._prefilling or self._decoding) and self._book.flush()

    def _abort(self, seq: Seq) -> None:
        """A stream was closed early: wake the loop so that it frees the KV (aborted is set)."""
        self._wake.set()

    def _allocated(self) -> int:
        return sum(s.context for s in (*self._prefilling, *self._decoding))

    async def _run(self) -> None:
        t = asyncio.get_running_loop().time()
        while True:
            self._drop_aborted()
            if not (self._waiting or self._prefilling or self._decoding):
                self._wake.clear()
                await self._wake.wait()
                # No ``t = now``: the next step starts when its request is ready (below), so a
                # late wake-up of this task does not shift the model's schedule.
                continue
            step = self._plan(t)
            if not (step.admitted or step.chunks or step.decoding):
                # Nothing runs until the first queued request reaches the scheduler.
                if self._waiting and self._waiting[0].ready_at > t:
                    t = self._waiting[0].ready_at
                    await sleep_until(t)
                else:  # cannot happen for validated requests; never spin
                    self._wake.clear()
                    await self._wake.wait()
                continue
            t = await self._execute(step, t)

    def _drop_aborted(self) -> None:
        for seq in [s for s in (*self._prefilling, *self._decoding) if s.aborted]:
            self._finish(seq, count=False)
        if any(s.aborted for s in self._waiting):
            self._waiting = deque(s for s in self._waiting if not s.aborted)

    def _plan(self, t: float) -> Step:
        """Admit what fits at time ``t``; choose the prefill chunks and the decode batch."""
        step = Step()
        budget = self._budget
        if self.config.enable_mixed_chunk and self._decoding:
            budget -= len(self._decoding)
        for seq in self._prefilling:  # the request being chunked goes first, as in SGLang
            if budget <= 0:
                break
            n = min(budget, seq.fill_len - seq.prefilled)
            step.chunks.append((seq, n))
            budget -= n
        prefill_role = self.config.role == "prefill"
        running = [*self._prefilling, *self._decoding]
        committed = batching.committed_tokens(running, self._ratio.current, prefill_role)
        while self._waiting:
            seq = self._waiting[0]
            if seq.ready_at > t:
                break
            need = batching.admission_need(seq, prefill_role)
            if len(running) >= self._max_running or committed + need >= self._max_total:
                break
            if seq.needs_fill and budget <= 0:
                break
            self._waiting.popleft()
            running.append(seq)
            committed += need
            if seq.retractions == 0:
                self._book.start(seq, t)  # a cached prefix is not computed again
            if seq.needs_fill:
                n = min(budget, seq.fill_len - seq.prefilled)
                budget -= n
                self._prefilling.append(seq)
                step.chunks.append((seq, n))
            else:
                step.admitted.append(seq)
        step.decoding = list(self._decoding)
        step.mixed = bool(step.chunks) and self.config.enable_mixed_chunk
        if self._book.evictable:
            self._book.fit(self._max_total - self._allocated())
        return step

    async def _execute(self, step: Step, t: float) -> float:
        """Run one step from time ``t``; return the step's end deadline."""
        for seq in step.admitted:  # KV came from the prefill server: first token now
            seq.prefilled = seq.req.prompt_len
            self._count_prompt(seq)
            if seq.req.max_new_tokens > 0:
                self._emit(seq, t)
            if not self._finished(seq):
                self._decoding.append(seq)
                step.decoding.append(seq)
        if step.chunks:
            # SGLang runs a prefill batch whenever one can be formed, and decodes otherwise.
            decodes = step.decoding if step.mixed else []
            cost = batching.prefill_cost(self._profile, self.config.tp_size, step.chunks, decodes)
            self._book.prefill_pass(step.chunks)
            t = await self._run_pass(cost, t)
            for seq, n in step.chunks:
                self._prefill_done(seq, n, t)
            self._emit_decodes(decodes, t)
            return t
        if step.decoding:
            self._retract_if_full(step)
            eff = self._profile.efficiency
            cost = batching.decode_cost(
                self._profile, self.config.tp_size, step.decoding, self._graph_max_bs
            )
            if self.config.role == "decode":
                # A PD decode server also polls its KV receivers and pre-allocation queue.
                cost = replace(cost, cpu=cost.cpu + eff.pd_decode_step_overhead_ms / 1e3)
            if step.admitted:
                cost = replace(cost, host=cost.host + eff.kv_admit_overhead_ms / 1e3)
            t = await self._run_pass(cost, t)
            self._emit_decodes(step.decoding, t)
            self._ratio.decay_step()
            self._book.decode_pass(len(step.decoding))
        return t

    async def _run_pass(self, cost: timing.PassCost, t: float) -> float:
        """Sleep through one pass started at ``t`` (on the shared GPU if any); its end."""
        jitter = self._profile.efficiency.jitter
        factor = 1.0 + jitter * (2.0 * self._rng.random() - 1.0) if jitter > 0 else 1.0
        scale = factor * self.config.time_scale
        cpu = cost.cpu if not self.config.disable_overlap_schedule else 0.0
        serial = 0.0 if not self.config.disable_overlap_schedule else cost.cpu
        if self.config.gpu is None:
            end = t + (max(cost.host + cost.gpu, cpu) + serial) * scale
        else:
            gpu_start = t + (cost.host + serial) * scale
            if gpu_start > t:
                await sleep_until(gpu_start)  # the GPU sees the work only once it is launched
            gpu_end = await self.config.gpu.run(cost.gpu * scale, gpu_start)
            end = max(gpu_end, t + cpu * scale)
        await sleep_until(end)
        return end

    def _retract_if_full(self, step: Step) -> None:
        """Retract decodes whose next token does not fit in the KV pool (SGLang's rule)."""
        victims = batching.retraction_victims(step.decoding, self._allocated(), self._max_total)
        if not victims:
            return
        for seq in victims:
            step.decoding.remove(seq)
            self._decoding.remove(seq)
            seq.fill_len = seq.req.prompt_len + seq.generated
            seq.gen_at_fill = seq.generated
            seq.prefilled = 0
            seq.retractions += 1
            self._book.released(seq)  # its prompt stays cached, evictable
        # Retracted requests go back to the head of the queue (they arrived first).
        self._waiting.extendleft(reversed(victims))
        self.retracted_total += len(victims)
        self._ratio.after_retract(step.decoding)

    def _emit_decodes(self, decoding: list[Seq], t: float) -> None:
        for seq in decoding:  # retracted ones were taken out of the step's batch already
            self._emit(seq, t)
            self._finished(seq)
        if decoding:
            self._throughput.record(t, len(decoding))

    def _count_prompt(self, seq: Seq) -> None:
        if not seq.counted_prompt:
            seq.counted_prompt = True
            self._prompt_total += seq.req.prompt_len

    def _prefill_done(self, seq: Seq, n: int, t: float) -> None:
        """Account a computed chunk; a completed fill yields its next token at ``t``."""
        seq.prefilled += n
        self._book.chunk_done(seq, t)
        if seq.prefilled < seq.fill_len:
            return
        self._prefilling.remove(seq)
        self._count_prompt(seq)
        if self.config.role == "prefill":
            seq.queue.put_nowait(TokenEvent(index=0, deadline=t, finished=True))
            self._gen_total += 1
            self._finish(seq, count=True)
            return
        if seq.generated >= seq.req.max_new_tokens:
            self._finish(seq, count=True)
            return
        self._emit(seq, t)
        if not self._finished(seq):
            self._decoding.append(seq)

    def _emit(self, seq: Seq, t: float) -> None:
        last = seq.generated + 1 >= seq.req.max_new_tokens
        if self._stream is not None:  # the output path and the router come after the GPU
            t = self._stream.deliver(t)
        if self.config.router is not None:
            t = self.config.router.deliver(t)
        seq.queue.put_nowait(TokenEvent(index=seq.generated, deadline=t, finished=last))
        seq.generated += 1
        self._gen_total += 1

    def _finished(self, seq: Seq) -> bool:
        """Finish ``seq`` if it has all its tokens (or was aborted); True if it is gone."""
        if seq.aborted or seq.generated >= seq.req.max_new_tokens:
            self._finish(seq, count=not seq.aborted)
            return True
        return False

    def _finish(self, seq: Seq, count: bool) -> None:
        if seq in self._decoding:
            self._decoding.remove(seq)
        if seq in self._prefilling:
            self._prefilling.remove(seq)
        seq.reserved = 0
        self._book.released(seq)
        seq.queue.put_nowait(END)
        if count:
            self._requests_total += 1
