"""What the harness observed around one measured point, beside the client's own row.

Kept in the point's record (``metadata.json``): whether every worker's radix cache was flushed
(and what each answered), how late the client sent its requests against its schedule, and how
the server-metrics scrape went (the scrapes themselves are in ``metrics.jsonl``, see
``sglbench.record.metrics``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# When the flush happened: after the client's warm-up (our hook at the client's own flush
# moment: the measured run starts cold), or before the client started (the Rust client: its
# warm-up request then runs on the flushed cache).
FlushWhen = Literal["after warm-up", "before the client"]


class _Observed(BaseModel):
    model_config = ConfigDict(extra="allow")


class WorkerFlush(_Observed):
    """One worker's answer to ``POST /flush_cache``."""

    name: str  # sglang-prefill-0, ... or "target" when only the client's URL was known
    url: str
    ok: bool
    status: int | None = None  # None: nothing answered
    seconds: float = 0.0
    message: str = ""  # first line of the body, or why nothing answered


class CacheFlush(_Observed):
    """The flush before one point: done means every worker answered 200."""

    done: bool
    when: FlushWhen
    at: str | None = None
    workers: list[WorkerFlush] = Field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """Names of the workers whose flush did not succeed."""
        return [w.name for w in self.workers if not w.ok]


class ClientLateness(_Observed):
    """How late the client sent its requests against its own schedule (one point).

    ``arrivals``: ``poisson`` (the client's, measured by wrapping its generator), ``gamma`` (our
    bursty schedule), ``trace`` (mooncake timestamps) or ``all at once`` (rate inf: no schedule).
    """

    arrivals: str
    requests: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    scheduled_s: float  # from the first to the last intended send
    sent_s: float  # from the first to the last actual send

    @property
    def overrun(self) -> float:
        """How much longer the sends took than scheduled, as a share (0.06 = 6% late)."""
        return self.sent_s / self.scheduled_s - 1.0 if self.scheduled_s > 0 else 0.0

    @property
    def mean_gap_ms(self) -> float:
        """The schedule's mean time between two requests, ms (0 with fewer than two)."""
        return 1000 * self.scheduled_s / (self.requests - 1) if self.requests > 1 else 0.0


class ScrapeSummary(_Observed):
    """How the point's /metrics scrapes went (the data is in the run's metrics file)."""

    file: str  # the metrics file, relative to the run directory when inside it
    endpoints: int
    failed: list[str] = Field(default_factory=list)  # endpoint: what went wrong
    warmup_included: bool = False  # the "before" scrape was taken before the warm-up
    gauge_samples: int = 0
    sampler_cpu_s: float | None = None  # CPU the gauge sampler thread used during the point


class Observation(_Observed):
    """Everything observed around one point; each part None when it was not done."""

    cache_flush: CacheFlush | None = None
    lateness: ClientLateness | None = None
    metrics: ScrapeSummary | None = None
