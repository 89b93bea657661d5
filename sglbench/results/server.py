"""Per-point figures from the stored server-metrics deltas (``record.metrics.PointMetrics``).

The recipes of the research note ``metrics.md`` (section 5), on SGLang 0.5.23's names:

* a histogram's point mean is ``sum(delta _sum) / sum(delta _count)`` over every matching series
  of every endpoint of the roles asked (ranks and workers summed; divided only at the end);
  no count is "no data" (None), not zero;
* the prefix-cache hit rate is ``hits / (hits + computed)`` from the counter
  ``sglang:prefill_effective_tokens_total{mode}`` on the roles that run prefill (agg, prefill),
  falling back to ``cached_tokens_total / prompt_tokens_total`` there; never the
  ``sglang:cache_hit_rate`` gauge, which holds only the last prefill batch, and never decode's
  counters, which re-report prefill's;
* transfer and bootstrap failures are counted by both PD roles, so one failed request may show
  on each side: per role, and the larger of the two as "requests that failed at least".

Roles come from the endpoint the series was scraped from (what the harness started), not from
the ``engine_type`` label, so a relabelled exporter cannot move figures between roles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sglbench.record.metrics import EndpointMetrics, EndpointRole, PointMetrics

PREFILL_ROLES: tuple[EndpointRole, ...] = ("agg", "prefill")
HIT_MODES = ("device_hit", "host_hit", "storage_hit")


def _matches(labels: dict[str, str], want: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in want.items())


def _endpoints(pm: PointMetrics, roles: Sequence[EndpointRole]) -> list[EndpointMetrics]:
    return [e for role in roles for e in pm.role(role)]


def total(pm: PointMetrics, sample: str, roles: Sequence[EndpointRole],
          **labels: str) -> float | None:
    """The summed delta of one sample name (``..._total``, ``_sum``, ``_count``), or None when
    no endpoint of ``roles`` was scraped successfully (absent series count as 0)."""
    endpoints = _endpoints(pm, roles)
    if not endpoints:
        return None
    return sum(s.delta for e in endpoints for s in e.deltas
               if s.name == sample and _matches(s.labels, labels))  # fmt: skip


def hist_mean(pm: PointMetrics, family: str, roles: Sequence[EndpointRole],
              **labels: str) -> float | None:
    """A histogram's mean over the point (its unit), None without observations."""
    count = total(pm, f"{family}_count", roles, **labels)
    if not count:
        return None
    return (total(pm, f"{family}_sum", roles, **labels) or 0.0) / count


def hist_count(pm: PointMetrics, family: str, roles: Sequence[EndpointRole],
               **labels: str) -> float:
    """How many observations a histogram got during the point (0 when unknown)."""
    return total(pm, f"{family}_count", roles, **labels) or 0.0


def prefix_hit_rate(pm: PointMetrics) -> float | None:
    """Share of prompt tokens served from the prefix cache during the point (0..1)."""
    family = "sglang:prefill_effective_tokens_total"
    hits = sum(total(pm, family, PREFILL_ROLES, mode=m) or 0.0 for m in HIT_MODES)
    computed = total(pm, family, PREFILL_ROLES, mode="input") or 0.0
    if hits + computed > 0:
        return hits / (hits + computed)
    cached = total(pm, "sglang:cached_tokens_total", PREFILL_ROLES)
    prompt = total(pm, "sglang:prompt_tokens_total", PREFILL_ROLES)
    return cached / prompt if cached is not None and prompt else None


@dataclass(frozen=True)
class KvTransfer:
    """The KV-transfer figures of one PD point (prefill side unless named)."""

    transfers: float
    mb_per_request: float | None  # MiB
    latency_ms: float | None
    gbps: float | None  # aggregate: total GiB / total transfer seconds
    gbps_mean: float | None  # mean of the per-request speeds (higher when small ones are fast)
    bootstrap_ms: dict[str, float | None] = field(default_factory=dict)  # per role
    alloc_ms: dict[str, float | None] = field(default_factory=dict)
    bootstrap_failed: dict[str, float] = field(default_factory=dict)
    transfer_failed: dict[str, float] = field(default_factory=dict)
    router_failures: float = 0.0  # smg's PD bootstrap + KV transfer failure counters


def kv_transfer(pm: PointMetrics) -> KvTransfer:
    """The point's KV-transfer table row."""
    prefill: tuple[EndpointRole, ...] = ("prefill",)
    count = hist_count(pm, "sglang:kv_transfer_latency_ms", prefill)
    mb = total(pm, "sglang:kv_transfer_total_mb_sum", prefill) or 0.0
    ms = total(pm, "sglang:kv_transfer_latency_ms_sum", prefill) or 0.0
    roles: tuple[EndpointRole, ...] = ("prefill", "decode")
    router = sum(total(pm, n, ("router",)) or 0.0 for n in (
        "smg_pd_bootstrap_failures_total", "smg_pd_kv_transfer_failures_total"))
    return KvTransfer(
        transfers=count,
        mb_per_request=mb / count if count else None,
        latency_ms=ms / count if count else None,
        gbps=(mb / 1024) / (ms / 1000) if ms > 0 else None,
        gbps_mean=hist_mean(pm, "sglang:kv_transfer_speed_gb_s", prefill),
        bootstrap_ms={r: hist_mean(pm, "sglang:kv_transfer_bootstrap_ms", (r,)) for r in roles},
        alloc_ms={r: hist_mean(pm, "sglang:kv_transfer_alloc_ms", (r,)) for r in roles},
        bootstrap_failed={r: total(pm, "sglang:num_bootstrap_failed_reqs_total", (r,)) or 0.0
                          for r in roles},
        transfer_failed={r: total(pm, "sglang:num_transfer_failed_reqs_total", (r,)) or 0.0
                         for r in roles},
        router_failures=router,
    )  # fmt: skip


def gauge_stats(pm: PointMetrics, name: str, role: EndpointRole) -> tuple[float, float] | None:
    """(mean, max) of a sampled gauge over a role's endpoints (summed per sample time)."""
    by_time: dict[float, float] = {}
    for endpoint in pm.role(role):
        for at, value in endpoint.gauges.get(name, []):
            by_time[at] = by_time.get(at, 0.0) + value
    if not by_time:
        return None
    values = list(by_time.values())
    return sum(values) / len(values), max(values)


@dataclass(frozen=True)
class ServerSummary:
    """What the results frame keeps of a point's server metrics."""

    prefix_hit_rate: float | None
    bootstrap_failed: float  # at least this many requests (the larger role's count)
    transfer_failed: float
    error: str | None  # the first endpoint error (failed scrape, restart), if any


def summarize(pm: PointMetrics) -> ServerSummary:
    """The frame's columns of one point."""
    kv = kv_transfer(pm)
    errors = [f"{e.name}: {e.error}" for e in pm.endpoints if e.error]
    return ServerSummary(
        prefix_hit_rate=prefix_hit_rate(pm),
        bootstrap_failed=max([*kv.bootstrap_failed.values(), 0.0]),
        transfer_failed=max([*kv.transfer_failed.values(), 0.0]) + kv.router_failures,
        error=errors[0] if errors else None,
    )


def finite(value: float | None) -> float | None:
    """The value, or None for None/NaN/inf (for tables)."""
    return value if value is not None and math.isfinite(value) else None
