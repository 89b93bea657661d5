"""Figures of the server-side view: TTFT breakdown bars, queue depths, KV usage and hit rate.

Built on ``matplotlib.figure.Figure`` directly, as ``report.plots``: no pyplot state, no GUI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from sglbench.record.metrics import EndpointRole, PointMetrics
from sglbench.report.breakdown import REST, Breakdown
from sglbench.results.server import gauge_stats, prefix_hit_rate

_DPI = 100
_PNG = {"compress_level": 3}
# One colour per stage, the same for agg and PD where the stage is the same kind of work.
SEGMENT_COLORS = {
    "bootstrap": "#8E44AD", "queue on prefill": "#F39C12", "queue": "#F39C12",
    "prefill compute": "#2E86AB", "prefill": "#2E86AB", "KV transfer": "#C0392B",
    "decode first step": "#28A745", REST: "#B0B0B0",
}  # fmt: skip
# (role, gauge, label) drawn in the queue panels.
QUEUE_LINES: tuple[tuple[EndpointRole, str, str], ...] = (
    ("prefill", "sglang:num_prefill_bootstrap_queue_reqs", "prefill bootstrap queue"),
    ("prefill", "sglang:num_queue_reqs", "prefill waiting queue"),
    ("prefill", "sglang:num_prefill_inflight_queue_reqs", "prefill KV in flight"),
    ("decode", "sglang:num_decode_prealloc_queue_reqs", "decode prealloc queue"),
    ("decode", "sglang:num_decode_transfer_queue_reqs", "decode transfer queue"),
    ("decode", "sglang:num_queue_reqs", "decode waiting queue"),
    ("agg", "sglang:num_queue_reqs", "agg waiting queue"),
    ("agg", "sglang:num_running_reqs", "agg running"),
    ("decode", "sglang:num_running_reqs", "decode running"),
)
MAX_PANELS = 12


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI, pil_kwargs=_PNG)
    return path


def plot_breakdown(rows: Sequence[Breakdown], path: Path) -> Path:
    """Stacked horizontal bars: one per point, one colour per stage, the rest in grey."""
    height = 1.8 + 0.42 * len(rows)
    figure = Figure(figsize=(10, height))
    figure.subplots_adjust(left=3.2 / 10, right=0.95, top=1 - 0.45 / height,
                           bottom=1.0 / height)  # fmt: skip
    ax = figure.add_subplot()
    colors: dict[str, str] = {}  # legend: one entry per colour (agg's queue = PD's queue)
    for y, row in enumerate(rows):
        left = 0.0
        for name, value in [*row.segments, (REST, max(row.rest_ms or 0.0, 0.0))]:
            if not value:
                continue
            color = SEGMENT_COLORS.get(name, "#555555")
            label = None if color in colors.values() else name
            colors.setdefault(name, color)
            ax.barh(y, value, left=left, color=color, label=label)
            left += value
        total = row.client_ttft_ms if row.client_ttft_ms is not None else left
        ax.annotate(f"{total:.0f} ms", (left, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)  # fmt: skip
    ax.set_yticks(range(len(rows)), [f"{r.tag} [{r.kind}]" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean TTFT, ms (server stages from /metrics; rest = client TTFT - stages)")
    ax.set_title("Where the time to first token goes", fontweight="bold")
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlim(0, ax.get_xlim()[1] * 1.1)
    figure.legend(loc="lower center", fontsize=7, ncols=6, frameon=False)
    return _save(figure, path)


def plot_queues(points: Sequence[PointMetrics], path: Path) -> Path:
    """Queue depths over each point's window (sampled gauges), one panel per point."""
    shown = list(points)[:MAX_PANELS]
    ncols = min(3, max(len(shown), 1))
    nrows = max(math.ceil(len(shown) / ncols), 1)
    figure = Figure(figsize=(5.2 * ncols, 3.0 * nrows + 1.0), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).flatten()
    for ax, pm in zip(axes, shown, strict=False):
        for role, gauge, label in QUEUE_LINES:
            merged: dict[float, float] = {}
            for endpoint in pm.role(role):  # summed over the role's workers
                for at, value in endpoint.gauges.get(gauge, []):
                    merged[at] = merged.get(at, 0.0) + value
            if merged:
                times = sorted(merged)
                ax.step(times, [merged[t] for t in times], where="post", label=label)
        ax.set_title(pm.tag, fontsize=9)
        ax.set_xlabel("s into the point", fontsize=8)
        ax.set_ylabel("requests", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    more = f" (first {MAX_PANELS} of {len(points)} points)" if len(points) > MAX_PANELS else ""
    figure.suptitle(f"Queue depths during each point{more}", fontweight="bold")
    return _save(figure, path)


def plot_cache(points: Sequence[PointMetrics], path: Path) -> Path:
    """Per point: prefix-cache hit rate, and the peak KV-cache usage of each role."""
    tags = [pm.tag for pm in points]
    width = max(7.0, 0.6 * len(tags) + 3)
    figure = Figure(figsize=(width, 6.4), layout="constrained")
    hit_ax, use_ax = figure.subplots(2, 1, sharex=True)
    hits = [100 * (prefix_hit_rate(pm) or 0.0) for pm in points]
    hit_ax.bar(range(len(tags)), hits, color="#2E86AB")
    hit_ax.set_ylabel("prefix-cache hits, % of prompt tokens", fontsize=8)
    hit_ax.set_ylim(0, 105)
    roles: tuple[EndpointRole, ...] = ("agg", "prefill", "decode")
    for i, role in enumerate(roles):
        peaks = [100 * ((gauge_stats(pm, "sglang:token_usage", role) or (0.0, 0.0))[1])
                 for pm in points]  # fmt: skip
        offsets = [x + (i - 1) * 0.27 for x in range(len(tags))]
        use_ax.bar(offsets, peaks, width=0.27, label=role)
    use_ax.set_ylabel("peak KV-cache usage, %", fontsize=8)
    use_ax.set_ylim(0, 105)
    use_ax.set_xticks(range(len(tags)), tags, rotation=45, ha="right", fontsize=7)
    use_ax.legend(fontsize=7)
    for ax in (hit_ax, use_ax):
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle("KV cache: prefix hits and usage per point", fontweight="bold")
    return _save(figure, path)
