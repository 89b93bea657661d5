"""Around one measured point: flush every worker's cache, scrape every /metrics, keep both.

The order, with SGLang's Python client (the client worker calls ``warmed`` and ``measured``):

1. the client sends its warm-up request(s);
2. ``warmed``: every worker is flushed (BENCH_FLUSH_CACHE), the "before" scrape is taken and
   the gauge sampler starts (BENCH_SERVER_METRICS), while the client waits;
3. the client pauses 1 s, then sends the measured requests;
4. ``measured``: after the last request, the "after" scrape; the sampler stops.

So the deltas hold exactly the measured requests and the first ones meet a cold cache. With the
Rust client (no hooks) or BENCH_FLUSH_CACHE=false (the client never reaches its flush), the
flush and the "before" scrape happen before the client starts, and the record says that the
warm-up is in the deltas. Nothing here fails a point: a failed flush or scrape is recorded.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import httpx

from sglbench.execute.flush import flush_workers
from sglbench.execute.scrape import GaugeSampler, Scrape, deltas, http_client, scrape
from sglbench.execute.target import Target
from sglbench.plan.observe import Endpoint
from sglbench.record.metrics import EndpointMetrics, PointMetrics, append_point
from sglbench.record.observation import (
    CacheFlush,
    ClientLateness,
    FlushWhen,
    Observation,
    ScrapeSummary,
)
from sglbench.settings import Settings


@functools.cache
def _client() -> httpx.Client:
    """One client for every point's before/after scrapes (this thread only)."""
    return http_client()


class PointObserver:
    """Flushes and scrapes for one point; ``start`` before the client, ``finish`` after."""

    def __init__(self, settings: Settings, target: Target, *, tag: str, mode: str | None,
                 metrics_file: Path) -> None:
        self.tag, self.mode, self.metrics_file = tag, mode, metrics_file
        workers = [e for e in target.endpoints if e.role != "router"]
        # Only the client's URL known (bench --base-url): flush through it (a router fans out).
        self.workers = workers or [Endpoint("target", "agg", target.base_url)]
        self.scraped = list(target.endpoints) if settings.bench_server_metrics else []
        self.flush_on = settings.bench_flush_cache
        self.interval = settings.bench_metrics_interval_s
        # The Python client reaches our flush hook only when it is asked to flush.
        self.hooked = not settings.bench_rust_client and settings.bench_flush_cache
        self.cache_flush: CacheFlush | None = None
        self.before: dict[str, Scrape] | None = None
        self.after: dict[str, Scrape] | None = None
        self.warmup_included = False
        self._sampler: GaugeSampler | None = None
        self._window = 0.0

    @property
    def active(self) -> bool:
        """True when there is anything to flush or scrape."""
        return self.flush_on or bool(self.scraped)

    def start(self) -> None:
        """Before the client starts: what the warm-up hook will not do."""
        if self.hooked:
            return
        if self.flush_on:
            self._flush("before the client")
        self.warmup_included = True
        self._scrape_before()

    def warmed(self) -> None:
        """The client's warm-up is over (hook): flush, then the "before" scrape."""
        if self.flush_on:
            self._flush("after warm-up")
        if self.before is None:
            self._scrape_before()

    def measured(self) -> None:
        """The last measured request finished (hook): the "after" scrape."""
        if self.before is not None and self.after is None:
            self.after = self._scrape_all()
            self._stop_sampler()

    def finish(self, lateness: dict[str, object] | None) -> Observation:
        """After the client returned: close the window, write the point's line, sum up."""
        self.measured()
        late = ClientLateness.model_validate(lateness) if lateness else None
        observed = Observation(cache_flush=self.cache_flush, lateness=late)
        if self.scraped or self.cache_flush or late:
            observed.metrics = self._write(observed.model_copy())
        return observed

    # ---- inside ---------------------------------------------------------------------------

    def _flush(self, when: FlushWhen) -> None:
        self.cache_flush = flush_workers(self.workers, when)

    def _scrape_all(self) -> dict[str, Scrape]:
        return {e.name: scrape(_client(), e) for e in self.scraped}

    def _scrape_before(self) -> None:
        if not self.scraped:
            return
        self.before = self._scrape_all()
        self._sampler = GaugeSampler(self.scraped, self.interval)
        self._sampler.start()

    def _stop_sampler(self) -> None:
        if self._sampler is not None:
            self._window = round(time.perf_counter() - self._sampler.start_time, 3)
            self._sampler.stop()

    def _endpoint(self, endpoint: Endpoint) -> EndpointMetrics:
        before = (self.before or {}).get(endpoint.name)
        after = (self.after or {}).get(endpoint.name)
        found = EndpointMetrics(name=endpoint.name, role=endpoint.role, url=endpoint.url)
        if before is None or after is None:
            found.error = "not scraped (the client failed before its warm-up ended)"
        elif before.error or after.error:
            found.error = f"before: {before.error}" if before.error else f"after: {after.error}"
        else:
            found.deltas, found.error = deltas(before, after)
        if self._sampler is not None:
            found.gauges = self._sampler.series.get(endpoint.name, {})
        return found

    def _write(self, observed: Observation) -> ScrapeSummary:
        endpoints = [self._endpoint(e) for e in self.scraped]
        line = PointMetrics(tag=self.tag, mode=self.mode, window_s=self._window or None,
                            warmup_included=self.warmup_included, endpoints=endpoints,
                            observed=observed)  # fmt: skip
        append_point(self.metrics_file, line)
        failed = [f"{e.name}: {e.error}" for e in endpoints if e.error]
        samples = sum(len(v) for e in endpoints for v in e.gauges.values())
        cpu = round(self._sampler.cpu_s, 4) if self._sampler is not None else None
        return ScrapeSummary(file=self.metrics_file.name, endpoints=len(endpoints),
                             failed=failed, warmup_included=self.warmup_included,
                             gauge_samples=samples, sampler_cpu_s=cpu)  # fmt: skip
