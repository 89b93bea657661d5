"""What the simulator counts for ``/metrics``: SGLang 0.5.23's series, names and meanings.

The families, label sets and bucket bounds are those of SGLang's ``SchedulerMetricsCollector``
and ``TokenizerMetricsCollector`` (``srt/observability/metrics_collector.py``); what each
interval means per role is in the research note ``metrics.md`` (section 2.3) and in
:mod:`sglbench.sim.engine` / :mod:`sglbench.sim.handover`, which observe them:

* scheduler side, on the engine's model clock: ``queue_time_seconds``,
  ``per_stage_req_latency_seconds{stage}``, ``prefill_effective_tokens_total{mode}``,
  ``realtime_tokens_total{mode}``, the ``kv_transfer_*`` histograms and the bootstrap/transfer
  failure counters; labels ``engine_type, model_name, moe_ep_rank, pp_rank, tp_rank``;
* tokenizer side, on the HTTP clock (receipt to the token leaving the server):
  ``time_to_first_token_seconds``, ``inter_token_latency_seconds``, ``e2e_request_latency_seconds``,
  ``request_time_per_output_token_seconds`` and the request/token counters; labels
  ``engine_type, model_name`` (+ ``is_streaming`` or ``cache_source``).

Observations are plain additions (no lock, no allocation; the server is one event loop). A
series exists from its first observation on, as in SGLang, except the pre-seeded
``prefill_effective_tokens_total`` modes. SGLang's tokenizer observes inter-token latency per
output batch; here a finished request adds its decode time spread evenly over its tokens (the
same ``_sum`` and ``_count``, coarser buckets), so the token path pays nothing.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Literal

from sglbench.sim.config import Role

Scope = Literal["scheduler", "tokenizer"]
ENGINE_TYPE: dict[Role, str] = {"null": "unified", "prefill": "prefill", "decode": "decode"}
MIB = 1024**2

QUEUE_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 10, 15, 20, 30,
                 40, 50, 60, 70, 80, 90, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000,
                 1200, 1400, 1600, 1800, 2000, 2500, 3000)  # fmt: skip
STAGE_BUCKETS = tuple(0.001 * 1.62**i for i in range(30))
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS = (*TTFT_BUCKETS, 600, 1200, 1800, 2400)
ITL_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06,
               0.08, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0)  # fmt: skip
KV_MS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
KV_MB_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 5000, 10000)
KV_SPEED_BUCKETS = (0.1, 0.5, 1, 5, 10, 25, 50, 100, 200, 400)
BOOTSTRAP_MS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
EFFECTIVE_MODES = ("input", "device_hit", "host_hit", "storage_hit")


class Buckets:
    """One histogram series: a count per bucket (not cumulative; the last is ``+Inf``), a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        """Empty, with SGLang's upper bounds ``bounds``."""
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        """``n`` observations of ``value`` (Prometheus buckets are ``value <= le``)."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.total += value * n


@dataclass
class HistogramFamily:
    """A histogram family; ``series`` by the values of its extra labels."""

    name: str
    doc: str
    bounds: tuple[float, ...]
    scope: Scope = "scheduler"
    labels: tuple[str, ...] = ()
    series: dict[tuple[str, ...], Buckets] = field(default_factory=dict)

    def observe(self, value: float, *values: str, n: int = 1) -> None:
        """Observe ``value`` in the series of label values ``values``."""
        found = self.series.get(values)
        if found is None:
            found = self.series[values] = Buckets(self.bounds)
        found.observe(value, n)


@dataclass
class CounterFamily:
    """A counter family (the name as exposed, with ``_total``)."""

    name: str
    doc: str
    scope: Scope = "scheduler"
    labels: tuple[str, ...] = ()
    series: dict[tuple[str, ...], float] = field(default_factory=dict)

    def inc(self, amount: float, *values: str) -> None:
        """Add ``amount`` to the series of label values ``values``."""
        self.series[values] = self.series.get(values, 0.0) + amount


def _streaming(streaming: bool) -> str:
    return "true" if streaming else "false"


class Telemetry:
    """The counters of one simulated server (see the module docstring)."""

    def __init__(self, role: Role, model_name: str) -> None:
        """Empty series for a server of ``role`` serving ``model_name``."""
        self.role = role
        self.engine_type = ENGINE_TYPE[role]
        self.model_name = model_name
        self.last_hit_rate = 0.0  # of the last prefill batch (SGLang's cache_hit_rate gauge)
        h, c = HistogramFamily, CounterFamily
        tok: Scope = "tokenizer"
        self.queue_time = h("sglang:queue_time_seconds", "Histogram of queueing time in seconds.",
                            QUEUE_BUCKETS)  # fmt: skip
        self.stage_latency = h("sglang:per_stage_req_latency_seconds",
                               "The latency of each stage of requests.", STAGE_BUCKETS,
                               labels=("stage",))  # fmt: skip
        self.kv_latency = h("sglang:kv_transfer_latency_ms",
                            "Histogram of KV cache transfer latency in ms.", KV_MS_BUCKETS)
        self.kv_size = h("sglang:kv_transfer_total_mb",
                         "Histogram of KV cache transfer size in MB.", KV_MB_BUCKETS)
        self.kv_speed = h("sglang:kv_transfer_speed_gb_s",
                          "Histogram of KV cache transfer speed in GB/s.", KV_SPEED_BUCKETS)
        self.kv_bootstrap = h("sglang:kv_transfer_bootstrap_ms",
                              "Histogram of KV transfer bootstrap time in ms.",
                              BOOTSTRAP_MS_BUCKETS)  # fmt: skip
        self.kv_alloc = h("sglang:kv_transfer_alloc_ms",
                          "Histogram of KV transfer allocation waiting time in ms.",
                          BOOTSTRAP_MS_BUCKETS)  # fmt: skip
        self.ttft = h("sglang:time_to_first_token_seconds",
                      "Histogram of time to first token in seconds.", TTFT_BUCKETS, tok,
                      ("is_streaming",))  # fmt: skip
        self.itl = h("sglang:inter_token_latency_seconds",
                     "Histogram of inter-token latency in seconds.", ITL_BUCKETS, tok)
        self.tpot = h("sglang:request_time_per_output_token_seconds",
                      "Per-request TPOT in seconds: (finished_time - first_token_time) / "
                      "(completion_tokens - 1).", ITL_BUCKETS, tok, ("is_streaming",))
        self.e2e = h("sglang:e2e_request_latency_seconds",
                     "Histogram of End-to-end request latency in seconds", E2E_BUCKETS, tok,
                     ("is_streaming",))  # fmt: skip
        self.bootstrap_failures = c("sglang:num_bootstrap_failed_reqs_total",
                                    "The number of bootstrap failed requests.")
        self.transfer_failures = c("sglang:num_transfer_failed_reqs_total",
                                   "The number of transfer failed requests.")
        self.effective_tokens = c("sglang:prefill_effective_tokens_total",
                                  "Effective prefill tokens with retracted-request re-counts "
                                  "excluded, updated on each log interval. mode: device_hit, "
                                  "host_hit, storage_hit, input.", labels=("mode",))
        for mode in EFFECTIVE_MODES:  # SGLang pre-seeds every mode at 0
            self.effective_tokens.inc(0.0, mode)
        self.realtime_tokens = c("sglang:realtime_tokens_total",
                                 "Total number of tokens processed (updated on each log "
                                 "interval). mode: prefill_compute, prefill_cache, decode.",
                                 labels=("mode",))  # fmt: skip
        self.prompt_tokens = c("sglang:prompt_tokens_total", "Number of prefill tokens processed.",
                               tok, ("is_streaming",))  # fmt: skip
        self.generation_tokens = c("sglang:generation_tokens_total",
                                   "Number of generation tokens processed.", tok,
                                   ("is_streaming",))  # fmt: skip
        self.cached_tokens = c("sglang:cached_tokens_total",
                               "Number of cached prompt tokens by source (device/host/storage).",
                               tok, ("cache_source",))  # fmt: skip
        self.requests = c("sglang:num_requests_total", "Number of requests processed.", tok,
                          ("is_streaming",))  # fmt: skip
        self.aborted_requests = c("sglang:num_aborted_requests_total",
                                  "Number of requests aborted.", tok)

    def families(self) -> list[HistogramFamily | CounterFamily]:
        """Every family, in page order."""
        return [v for v in vars(self).values() if isinstance(v, HistogramFamily | CounterFamily)]

    # Scheduler side: the engine and the PD hand-over, on the model's clock.

    def stage(self, stage: str, seconds: float) -> None:
        """One request passed ``stage`` (SGLang's ``per_stage_req_latency_seconds``)."""
        self.stage_latency.observe(max(0.0, seconds), stage)

    def queued(self, seconds: float) -> None:
        """A request waited ``seconds`` in the waiting queue before its first forward."""
        self.queue_time.observe(max(0.0, seconds))

    def started(self, recv_at: float, ready_at: float, t: float, landed_at: float | None) -> None:
        """A request's first forward at ``t`` (decode: its first batch), waiting since ``ready_at``.

        The simulator's decode is ready when the prefill's scheduler takes a request (its
        metadata is there), so a prefill's bootstrap stage is the model's 0; a decode's request
        waits from the KV's arrival (``landed_at``) and emits its first token (computed by the
        prefill) in its first batch, so ``fake_output`` is 0.
        """
        if self.role == "decode" and landed_at is not None:
            ready_at = min(ready_at, landed_at)  # SGLang's decode queues it when the KV lands
        self.queued(t - ready_at)
        if self.role == "null":
            self.stage("request_process", ready_at - recv_at)
        elif self.role == "prefill":
            self.stage("prefill_bootstrap", ready_at - recv_at)
        else:
            self.stage("decode_waiting", t - ready_at)
            self.stage("fake_output", 0.0)

    def prefill_batch(self, computed: int, cached: int) -> None:
        """A prefill pass computed ``computed`` prompt tokens; its new requests hit ``cached``."""
        self.effective_tokens.inc(computed, "input")
        self.effective_tokens.inc(cached, "device_hit")
        self.realtime_tokens.inc(computed, "prefill_compute")
        self.realtime_tokens.inc(cached, "prefill_cache")
        if computed + cached:
            self.last_hit_rate = cached / (computed + cached)

    def decode_batch(self, tokens: int) -> None:
        """A decode pass produced ``tokens`` tokens."""
        self.realtime_tokens.inc(tokens, "decode")

    def kv_transferred(self, nbytes: int, seconds: float) -> None:
        """Prefill side: one request's KV (``nbytes``) arrived ``seconds`` after it was queued."""
        seconds = max(seconds, 1e-9)
        mib = nbytes / MIB
        self.kv_latency.observe(seconds * 1e3)
        self.kv_size.observe(mib)
        self.kv_speed.observe(mib / 1024 / seconds)
        self.stage("prefill_transfer_kv_cache", seconds)

    def handshake(self, bootstrap_s: float, alloc_s: float) -> None:
        """One request's handshake took ``bootstrap_s``, its KV allocation wait ``alloc_s``."""
        self.kv_bootstrap.observe(max(0.0, bootstrap_s) * 1e3)
        self.kv_alloc.observe(max(0.0, alloc_s) * 1e3)

    # Tokenizer side: the HTTP layer, from receipt to the token leaving the server.

    def first_token(self, streaming: bool, seconds: float) -> None:
        """The first output token left ``seconds`` after receipt (never on a PD prefill)."""
        if self.role != "prefill":
            self.ttft.observe(max(0.0, seconds), _streaming(streaming))

    def finished(self, streaming: bool, prompt: int, completion: int, cached: int,
                 e2e: float, decode_s: float | None) -> None:  # fmt: skip
        """A request ended (also with an error); ``decode_s``: first to last token, if both."""
        flag = _streaming(streaming)
        self.prompt_tokens.inc(prompt, flag)
        self.generation_tokens.inc(completion, flag)
        self.requests.inc(1, flag)
        if cached > 0:
            self.cached_tokens.inc(cached, "device")
        self.e2e.observe(max(0.0, e2e), flag)
        if self.role != "prefill" and decode_s is not None and completion > 1:
            per_token = max(0.0, decode_s) / (completion - 1)
            self.tpot.observe(per_token, flag)
            self.itl.observe(per_token, n=completion - 1)

    def aborted(self) -> None:
        """The client went away before the request finished."""
        self.aborted_requests.inc(1)
