"""``GET /metrics``: the simulator's page in SGLang 0.5.23's Prometheus names, labels and meanings.

The counters and histograms come from :class:`~sglbench.sim.telemetry.Telemetry`; the gauges are
read from the engine and the PD queues when the page is asked for (SGLang sets them at report
times; a scrape is at least as fresh). Rendered with ``prometheus_client``'s own exposition
(text format 0.0.4), so ``le`` strings, ``_bucket``/``_sum``/``_count`` and ``_total`` are
exactly as SGLang's page writes them. As on SGLang's multiprocess page there are no
``_created`` samples and no families without a series; label names are sorted.

Label sets: scheduler-side series carry ``engine_type, model_name, moe_ep_rank, pp_rank,
tp_rank`` (one scheduler, rank 0); tokenizer-side ones ``engine_type, model_name``; both plus
the family's own label (``stage``, ``mode``, ``is_streaming``, ``cache_source``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import cast

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from sglbench.sim.service import SimService
from sglbench.sim.telemetry import CounterFamily, HistogramFamily, Scope, Telemetry

_le = cast(Callable[[float], str], floatToGoString)  # the bucket strings prometheus_client writes
RANKS = {"moe_ep_rank": "0", "pp_rank": "0", "tp_rank": "0"}
GAUGES = {
    "sglang:num_running_reqs": "The number of running requests.",
    "sglang:num_queue_reqs": "The number of requests in the waiting queue.",
    "sglang:gen_throughput": "The generation throughput (token/s).",
    "sglang:cache_hit_rate": "The prefix cache hit rate.",
    "sglang:token_usage": "The token usage.",
    "sglang:num_used_tokens": "The number of used tokens.",
    "sglang:kv_available_tokens": "Number of free token slots in the KV cache pool.",
    "sglang:kv_evictable_tokens":
        "Number of evictable (radix-cached) token slots in the KV cache pool.",
    "sglang:kv_used_tokens": "Number of actively used token slots in the KV cache pool.",
    "sglang:max_total_num_tokens": "Maximum total number of tokens in the KV cache pool.",
    "sglang:num_prefill_bootstrap_queue_reqs":
        "The number of requests in the prefill bootstrap queue.",
    "sglang:num_prefill_inflight_queue_reqs":
        "The number of requests in the prefill inflight queue.",
    "sglang:num_decode_prealloc_queue_reqs":
        "The number of requests in the decode prealloc queue.",
    "sglang:num_decode_transfer_queue_reqs":
        "The number of requests in the decode transfer queue.",
}  # fmt: skip


def gauge_values(service: SimService) -> dict[str, float]:
    """The gauges now (the PD queues read 0 on the roles they do not concern, as in SGLang)."""
    stats = service.engine.stats()
    queues = service.handover.queues
    total = stats.max_total_tokens
    used = stats.kv_tokens_used
    values = [stats.running, stats.queued, stats.last_gen_throughput,
              service.telemetry.last_hit_rate, used / total if total else 0.0, used,
              max(0, total - used - stats.kv_evictable_tokens), stats.kv_evictable_tokens, used,
              total, queues.bootstrap, queues.inflight, queues.prealloc,
              queues.transfer]  # fmt: skip
    return {name: float(v) for name, v in zip(GAUGES, values, strict=True)}


class _Page(Collector):
    """One scrape's families (built from plain numbers; nothing is kept between scrapes)."""

    def __init__(self, telemetry: Telemetry, gauges: dict[str, float]) -> None:
        self._telemetry = telemetry
        self._gauges = gauges

    def _base(self, scope: Scope) -> dict[str, str]:
        t = self._telemetry
        base = {"engine_type": t.engine_type, "model_name": t.model_name}
        return {**base, **RANKS} if scope == "scheduler" else base

    def collect(self) -> Iterator[Metric]:
        for family in self._telemetry.families():
            if family.series:
                yield self._family(family)
        names, values = zip(*sorted(self._base("scheduler").items()), strict=True)
        for name, value in self._gauges.items():
            gauge = GaugeMetricFamily(name, GAUGES[name], labels=names)
            gauge.add_metric(values, value)
            yield gauge

    def _family(self, family: HistogramFamily | CounterFamily) -> Metric:
        base = self._base(family.scope)
        names = sorted([*base, *family.labels])
        metric: HistogramMetricFamily | CounterMetricFamily
        if isinstance(family, CounterFamily):
            metric = CounterMetricFamily(family.name, family.doc, labels=names)
        else:
            metric = HistogramMetricFamily(family.name, family.doc, labels=names)
            bounds = [_le(b) for b in family.bounds] + ["+Inf"]
        for extra, series in family.series.items():
            labels = {**base, **dict(zip(family.labels, extra, strict=True))}
            values = [labels[n] for n in names]
            if isinstance(series, float):
                assert isinstance(metric, CounterMetricFamily)
                metric.add_metric(values, series)
                continue
            assert isinstance(metric, HistogramMetricFamily)
            cumulative, running = [], 0
            for bound, count in zip(bounds, series.counts, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            metric.add_metric(values, cumulative, series.total)
        return metric


def render_metrics(service: SimService) -> str:
    """The page (Prometheus text format 0.0.4)."""
    page = _Page(service.telemetry, gauge_values(service))
    return generate_latest(page).decode("utf-8")
