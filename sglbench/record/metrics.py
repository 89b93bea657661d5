"""``metrics.jsonl``: what was observed around each point, one JSON line per point.

Execution scrapes ``/metrics`` of every worker and the router just before and just after a point
and samples a few gauges during it (``sglbench.execute.scrape``); this module is the file's
schema, its reader and appender, and the catalogue of the metric names the report reads (a unit
test finds each in the installed packages' files). Counters and histograms are stored as the
point's deltas (after - before; histogram buckets dropped, ``_sum``/``_count`` kept; zero
deltas left out, as SGLang itself creates a series only at its first observation). Gauges are
time series ``[seconds since the point's start, value]``, summed over a worker's series (max
for usage fractions).

Where the file sits: ``<run>/metrics.jsonl`` in a run directory (compare), else
``<tag>.metrics.jsonl`` beside a bench results file (``metrics_file_for``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sglbench.record.observation import Observation
from sglbench.record.schema import METADATA_FILE

EndpointRole = Literal["agg", "prefill", "decode", "router"]
METRICS_FILE = "metrics.jsonl"
METRICS_SUFFIX = ".metrics.jsonl"

# SGLang 0.5.23's names (sglang/srt/observability/metrics_collector.py), as exposed.
HISTOGRAMS = (
    "sglang:queue_time_seconds", "sglang:per_stage_req_latency_seconds",
    "sglang:kv_transfer_latency_ms", "sglang:kv_transfer_total_mb",
    "sglang:kv_transfer_speed_gb_s", "sglang:kv_transfer_bootstrap_ms",
    "sglang:kv_transfer_alloc_ms", "sglang:time_to_first_token_seconds",
)  # fmt: skip
COUNTERS = (
    "sglang:num_bootstrap_failed_reqs_total", "sglang:num_transfer_failed_reqs_total",
    "sglang:prefill_effective_tokens_total", "sglang:cached_tokens_total",
    "sglang:prompt_tokens_total", "sglang:num_requests_total",
    "sglang:num_aborted_requests_total",
)  # fmt: skip
# Sampled during a point; "max" for fractions (several series are ranks of one pool).
GAUGES: dict[str, Literal["sum", "max"]] = {
    "sglang:num_queue_reqs": "sum",
    "sglang:num_running_reqs": "sum",
    "sglang:num_prefill_bootstrap_queue_reqs": "sum",
    "sglang:num_prefill_inflight_queue_reqs": "sum",
    "sglang:num_decode_prealloc_queue_reqs": "sum",
    "sglang:num_decode_transfer_queue_reqs": "sum",
    "sglang:token_usage": "max",
}
# The routers' names (Rust binaries of sglang-router 0.3.2 and smg 1.13.0); failures only on smg.
ROUTER_COUNTERS = (
    "smg_router_requests_total", "smg_pd_bootstrap_failures_total",
    "smg_pd_kv_transfer_failures_total",
)  # fmt: skip
ROUTER_HISTOGRAMS = ("smg_router_request_duration_seconds",)


class _Line(BaseModel):
    model_config = ConfigDict(extra="allow")


class Series(_Line):
    """One counter or histogram sample's delta over the point."""

    name: str  # the sample name: ..._total, ..._sum or ..._count
    labels: dict[str, str] = Field(default_factory=dict)
    delta: float


class EndpointMetrics(_Line):
    """One worker's (or the router's) metrics over one point."""

    name: str  # sglang-prefill-0, router, ...
    role: EndpointRole
    url: str
    error: str | None = None  # a failed scrape or a counter that went down (restart)
    deltas: list[Series] = Field(default_factory=list)
    gauges: dict[str, list[tuple[float, float]]] = Field(default_factory=dict)


class PointMetrics(_Line):
    """The line of one point: when the window was, and every endpoint's metrics."""

    tag: str
    mode: str | None = None
    window_s: float | None = None  # from the "before" to the "after" scrape
    warmup_included: bool = False  # "before" was scraped before the client's warm-up
    endpoints: list[EndpointMetrics] = Field(default_factory=list)
    # The flush and lateness of the point (also in a compare run's record; ``invoke bench``
    # keeps no record, so this is where its observation lives).
    observed: Observation | None = None

    def role(self, role: EndpointRole) -> list[EndpointMetrics]:
        """The endpoints of one role whose scrapes succeeded."""
        return [e for e in self.endpoints if e.role == role and e.error is None]


def metrics_file_for(results_file: Path) -> Path:
    """Where the metrics of a results file's points go: the run's, or one beside the file."""
    if (results_file.parent / METADATA_FILE).is_file():
        return results_file.parent / METRICS_FILE
    return results_file.with_name(results_file.stem + METRICS_SUFFIX)


def append_point(path: Path, line: PointMetrics) -> None:
    """Append one point's line (the file is created when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line.model_dump_json(exclude_defaults=True) + "\n")


def read_points(path: Path) -> dict[str, PointMetrics]:
    """Tag -> the newest line of that point; a missing file or a bad line is skipped."""
    found: dict[str, PointMetrics] = {}
    if not path.is_file():
        return found
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            line = PointMetrics.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            continue  # a line cut by an interrupt: that point has no metrics
        found[line.tag] = line
    return found


def names_read() -> Iterable[str]:
    """Every metric family name the report reads (SGLang's and the routers')."""
    yield from (*HISTOGRAMS, *COUNTERS, *GAUGES, *ROUTER_COUNTERS, *ROUTER_HISTOGRAMS)
