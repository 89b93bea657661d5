"""Where a point's time to first token goes, from its server-metrics deltas (pure).

PD, in the order a request lives them (research note ``metrics.md`` 5.2), all per-point means:

    bootstrap          per_stage_req_latency_seconds{prefill, stage=prefill_bootstrap}
    queue on prefill   queue_time_seconds on prefill
    prefill compute    per_stage{prefill, stage=prefill_forward}
    KV transfer        per_stage{prefill, stage=prefill_transfer_kv_cache}
    decode first step  per_stage{decode, stage=decode_waiting} + per_stage{decode, fake_output}
    rest               the client's mean TTFT minus the above: router, HTTP, tokenizing,
                       decode noticing the KV, streaming, the client

Agg: queue (queue_time_seconds) and prefill (per_stage{prefill_forward}), the rest as above.
A sum of per-stage means is the mean of per-request sums, because every request passes each
stage once, so the rest is a proper mean; it can come out slightly negative (rounding, failed
requests the client does not count) and is then drawn as 0 and noted below -5% of TTFT.

Not used, on purpose: decode's ``decode_bootstrap``/``decode_transferred`` stages run *in
parallel* with prefill's work (both workers get the request at once), so they are shown only as
a cross-check ("decode waited"), never stacked; smg's ``smg_pd_ttft_seconds`` is taken at the
decode response head, which SGLang sends before the first token, and ``smg_router_ttft_seconds``
is gRPC-only, so the router's share is what remains of the client's TTFT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sglbench.record.metrics import EndpointRole, PointMetrics
from sglbench.results.server import hist_mean

STAGE = "sglang:per_stage_req_latency_seconds"
QUEUE = "sglang:queue_time_seconds"
TTFT = "sglang:time_to_first_token_seconds"
# (segment, [(family, role, stage or None), ...]) in seconds; stages of one segment add up.
Part = tuple[str, EndpointRole, str | None]
PD_SEGMENTS: tuple[tuple[str, tuple[Part, ...]], ...] = (
    ("bootstrap", ((STAGE, "prefill", "prefill_bootstrap"),)),
    ("queue on prefill", ((QUEUE, "prefill", None),)),
    ("prefill compute", ((STAGE, "prefill", "prefill_forward"),)),
    ("KV transfer", ((STAGE, "prefill", "prefill_transfer_kv_cache"),)),
    ("decode first step", ((STAGE, "decode", "decode_waiting"), (STAGE, "decode", "fake_output"))),
)
AGG_SEGMENTS: tuple[tuple[str, tuple[Part, ...]], ...] = (
    ("queue", ((QUEUE, "agg", None),)),
    ("prefill", ((STAGE, "agg", "prefill_forward"),)),
)
REST = "rest (router, HTTP, client)"
NEGATIVE_REST_SHARE = 0.05


@dataclass(frozen=True)
class Breakdown:
    """One point's TTFT split, in ms."""

    tag: str
    kind: str  # "pd" or "agg"
    client_ttft_ms: float | None
    segments: list[tuple[str, float | None]]  # None: that stage was not observed
    server_ttft_ms: float | None  # decode's (PD) or agg's time_to_first_token mean
    decode_waited_ms: float | None  # PD: decode_bootstrap + decode_transferred (cross-check)
    notes: list[str] = field(default_factory=list)

    @property
    def known_ms(self) -> float:
        """Sum of the observed server stages."""
        return sum(v for _, v in self.segments if v is not None)

    @property
    def rest_ms(self) -> float | None:
        """Client TTFT minus the server stages (may be negative; drawn clamped at 0)."""
        return None if self.client_ttft_ms is None else self.client_ttft_ms - self.known_ms


def _part_ms(pm: PointMetrics, part: Part) -> float | None:
    family, role, stage = part
    mean = hist_mean(pm, family, (role,), **({"stage": stage} if stage else {}))
    return None if mean is None else mean * 1000.0


def _segment_ms(pm: PointMetrics, parts: tuple[Part, ...]) -> float | None:
    values = [_part_ms(pm, p) for p in parts]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def kind_of(pm: PointMetrics) -> str:
    """``pd`` when the point's endpoints include prefill workers, else ``agg``."""
    return "pd" if any(e.role == "prefill" for e in pm.endpoints) else "agg"


def ttft_breakdown(pm: PointMetrics, client_ttft_ms: float | None) -> Breakdown:
    """The point's breakdown (``client_ttft_ms``: the client's mean TTFT of the point)."""
    kind = kind_of(pm)
    table = PD_SEGMENTS if kind == "pd" else AGG_SEGMENTS
    segments = [(name, _segment_ms(pm, parts)) for name, parts in table]
    server = _part_ms(pm, (TTFT, "decode" if kind == "pd" else "agg", None))
    waited = None
    if kind == "pd":
        waited = _segment_ms(pm, ((STAGE, "decode", "decode_bootstrap"),
                                  (STAGE, "decode", "decode_transferred")))  # fmt: skip
    result = Breakdown(pm.tag, kind, client_ttft_ms, segments, server, waited)
    missing = [name for name, value in segments if value is None]
    if missing:
        result.notes.append(f"not observed: {', '.join(missing)}")
    if pm.warmup_included:
        result.notes.append("warm-up request included in the means")
    rest = result.rest_ms
    if rest is not None and client_ttft_ms and rest < -NEGATIVE_REST_SHARE * client_ttft_ms:
        result.notes.append(f"server stages exceed the client's TTFT by {-rest:.0f} ms")
    return result
