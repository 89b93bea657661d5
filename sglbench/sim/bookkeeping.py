"""The engine's bookkeeping: the prefix cache its requests use and the scheduler-side metrics.

One call per scheduler event (a request's first forward, a chunk computed, a pass, a request
gone), so that :mod:`sglbench.sim.engine` keeps only the scheduling policy. The cache is
:class:`~sglbench.sim.prefix_cache.PromptCache` on the servers that prefill (aggregated and PD
prefill; SGLang's PD decode has no radix cache by default); the metrics go to a
:class:`~sglbench.sim.telemetry.Telemetry` when the engine has one (the HTTP server does;
in-process replays do not).
"""

from __future__ import annotations

from collections.abc import Sequence

from sglbench.sim.config import Role
from sglbench.sim.prefix_cache import PromptCache
from sglbench.sim.sequence import Seq
from sglbench.sim.telemetry import Telemetry


class Bookkeeping:
    """Prefix cache and metrics of one engine (see the module docstring)."""

    def __init__(self, role: Role, telemetry: Telemetry | None) -> None:
        """A cache unless ``role`` is decode; metrics into ``telemetry`` if given."""
        self.cache = PromptCache() if role != "decode" else None
        self.telemetry = telemetry

    @property
    def evictable(self) -> int:
        """Cached tokens no running request uses (SGLang's evictable KV)."""
        return self.cache.tree.evictable if self.cache is not None else 0

    def start(self, seq: Seq, t: float) -> None:
        """A request's first forward at ``t``: it skips its cached prefix; its queue time."""
        times = seq.req.times
        times.forward_at = times.chunk_at = t
        if self.cache is not None:
            seq.prefilled = times.cached_tokens = self.cache.admit(seq, seq.req.prompt_ids)
        if self.telemetry is not None:
            self.telemetry.started(times.recv_at, seq.ready_at, t, times.kv_landed_at)

    def chunk_done(self, seq: Seq, t: float) -> None:
        """A chunk of ``seq`` ended at ``t``: its stage latency; a full prompt gets cached."""
        times, done = seq.req.times, seq.prefilled >= seq.fill_len
        if done and self.cache is not None:
            self.cache.filled(seq, seq.req.prompt_ids)
        if self.telemetry is None or seq.retractions or times.forward_at is None:
            return  # SGLang's stages time a request's first fill only
        if done:
            self.telemetry.stage("prefill_forward", t - times.forward_at)
        else:
            self.telemetry.stage("chunked_prefill", t - (times.chunk_at or times.forward_at))
        times.chunk_at = t

    def prefill_pass(self, chunks: Sequence[tuple[Seq, int]]) -> None:
        """A prefill pass over ``chunks`` starts (retracted requests' re-counts left out)."""
        if self.telemetry is None:
            return
        fresh = [(seq, n) for seq, n in chunks if not seq.retractions]
        computed = sum(n for _, n in fresh)
        # A request's hit counts with its first chunk: nothing of it computed yet.
        cached = sum(s.req.times.cached_tokens for s, _ in fresh
                     if s.prefilled == s.req.times.cached_tokens)  # fmt: skip
        self.telemetry.prefill_batch(computed, cached)

    def decode_pass(self, batch: int) -> None:
        """A decode pass produced one token for each of ``batch`` requests."""
        if self.telemetry is not None:
            self.telemetry.decode_batch(batch)

    def released(self, seq: Seq) -> None:
        """``seq`` ended or was retracted: the prefix it held becomes evictable."""
        if self.cache is not None:
            self.cache.release(seq)

    def fit(self, free_tokens: int) -> None:
        """Evict cached prefixes that no longer fit in ``free_tokens`` of the KV pool."""
        if self.cache is not None and self.cache.tree.evictable > free_tokens:
            self.cache.fit(free_tokens)

    def flush(self) -> bool:
        """Empty the cache (False if a request still holds a part of it)."""
        return self.cache.flush() if self.cache is not None else True
