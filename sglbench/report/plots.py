"""PNG plots of benchmark results (matplotlib, no display needed).

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot's global state,
so nothing depends on a GUI backend and figures are freed as soon as they are saved. Each figure
is built and saved by one job, and the jobs run on all cores (``side_by_side``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sglbench.report.analysis import goodput, per_request_goodput
from sglbench.report.side_by_side import run_side_by_side
from sglbench.report.tables import summary_table

BY_TAG_FILES = ("throughput_by_tag.png", "e2e_latency_by_tag.png")
# Stable colours: aggregated first, then the PD variants in their sorted order.
_PALETTE = ("#2E86AB", "#A23B72", "#F18F01", "#28A745", "#6F42C1", "#C0392B", "#8C564B",
            "#E377C2", "#7F7F7F", "#17A2B8")  # fmt: skip
_FIXED = {"agg": "#2E86AB", "pd": "#A23B72", "pd_intra": "#A23B72", "pd_inter": "#F18F01"}
_DPI = 100
_PNG = {"compress_level": 3}  # zlib level: a third faster than the default 6, ~15% larger
_BORDER = 0.1  # inches of white around a bar chart: savefig's pad for a tight box
_CONSTRAINED_PAD = 3 / 72  # inches: constrained layout's default figure margin

Draw = Callable[[Any, pd.DataFrame, str], None]


def plot_by_tag(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write ``throughput_by_tag.png`` and ``e2e_latency_by_tag.png`` (one bar group per tag).

    Args:
        df: a frame from ``sglbench.results.load_results``.
        out_dir: where the PNGs go (created if missing).

    Returns:
        The two PNG paths.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary_table(df)
    labels = [f"{t} [{m}]" for t, m in zip(table["tag"], table["mode"], strict=True)]
    charts = (
        ({"output tok/s": table["output_throughput"], "total tok/s": table["total_throughput"]},
         "Throughput by tag", "tokens / s"),
        ({"mean E2E (ms)": table["mean_e2e_ms"], "mean TTFT (ms)": table["mean_ttft_ms"]},
         "Latency by tag", "milliseconds"),
    )  # fmt: skip
    paths = [out_dir / name for name in BY_TAG_FILES]

    def save(path: Path, series: dict[str, pd.Series], title: str, unit: str) -> None:
        _bars(labels, series, title, unit).savefig(path, dpi=_DPI, pil_kwargs=_PNG)

    run_side_by_side([functools.partial(save, path, *chart)
                      for path, chart in zip(paths, charts, strict=True)])  # fmt: skip
    return paths


def _bars(labels: Sequence[str], series: dict[str, pd.Series], title: str, unit: str) -> Figure:
    height = max(3.0, 0.45 * len(labels) * len(series) / 2 + 1.5)
    # A 10 in wide chart in constrained layout, saved tight: its PNG, border included.
    grow = 2 * (_BORDER - _CONSTRAINED_PAD)
    figure = Figure(figsize=(10 + grow, height + grow), dpi=_DPI)
    ax = figure.add_subplot()
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        positions = [y + (i - (len(series) - 1) / 2) * width for y in range(len(labels))]
        bars = ax.barh(positions, values.fillna(0).tolist(), height=width, label=name,
                       color=_PALETTE[i])  # fmt: skip
        ax.bar_label(bars, fmt="%.0f", padding=3, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title, fontweight="bold")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    _fill(figure, ax)
    return figure


def _fill(figure: Figure, ax: Any) -> None:
    """Place ``ax`` so that it and its labels fill ``figure`` up to a ``_BORDER`` white margin.

    This is what constrained layout and then ``savefig(bbox_inches="tight")`` drew, at a
    fraction of the cost: they lay out every label four times (two layout passes, the tight box,
    the render, the last on a renderer of its own that measures every text again); here one
    measuring pass (two when the resized axes gets other x ticks, as constrained layout allows
    for) on the renderer that then draws the PNG. The same picture: of its three million
    pixels, about a thousand differ in anti-aliasing (positions agree to 1e-15).
    """
    renderer = FigureCanvasAgg(figure).get_renderer()  # type: ignore[no-untyped-call]
    width, height = figure.bbox.width, figure.bbox.height
    border = _BORDER * figure.dpi
    for _ in range(2):
        ticks = list(ax.get_xticks())
        tight = ax.get_tightbbox(renderer)
        box = ax.get_position().transformed(figure.transFigure)
        left, bottom = box.x0 - tight.x0 + border, box.y0 - tight.y0 + border
        right, top = tight.x1 - box.x1 + border, tight.y1 - box.y1 + border
        ax.set_position([left / width, bottom / height, 1 - (left + right) / width,
                         1 - (bottom + top) / height])  # fmt: skip
        if list(ax.get_xticks()) == ticks:
            break  # the same tick labels: the margins just measured still hold


def series_colors(points: pd.DataFrame) -> dict[str, str]:
    """A colour per series, the same in every figure: the original's colours for agg, PD
    (intra-node) and inter-node PD, the rest of the palette for other series in sorted order."""
    names = sorted(set(map(str, points["series"])), key=lambda s: (s not in _FIXED, s))
    colors: dict[str, str] = {}
    for name in names:
        wanted = _FIXED.get(name)
        free = [c for c in _PALETTE if c not in colors.values()] or list(_PALETTE)
        colors[name] = wanted if wanted and wanted not in colors.values() else free[0]
    return colors


def plot_sweeps(
    points: pd.DataFrame, out_dir: Path, slo_ttft_ms: float | None, slo_itl_ms: float | None,
    attainment: float = 0.9,
) -> dict[str, Path]:
    """Write the report's figures: one panel per workload, one line per series.

    Returns:
        Figure name -> PNG path, in the order the report shows them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, tuple[str, str, Draw]] = {
        "output_throughput": ("Output throughput vs concurrency", "output tok/s",
                              _line("output_throughput")),
        "total_throughput": ("Total throughput vs concurrency", "total tok/s",
                             _line("total_throughput")),
        "ttft": ("TTFT p50 (solid) and p99 (dashed)", "ms",
                 _line("median_ttft_ms", "p99_ttft_ms")),
        "itl": ("ITL p50 (solid) and p99 (dashed)", "ms", _line("median_itl_ms", "p99_itl_ms")),
        "e2e": ("E2E latency mean (solid) and p99 (dashed)", "ms",
                _line("mean_e2e_ms", "p99_e2e_ms")),
        "pareto": ("Pareto: output tok/s per GPU vs tok/s per user", "output tok/s per GPU",
                   _pareto),
    }  # fmt: skip
    if slo_ttft_ms is not None or slo_itl_ms is not None:
        frame = points.assign(goodput_per_gpu=goodput(points, slo_ttft_ms, slo_itl_ms,
                                                      attainment))  # fmt: skip
        how = (f"{attainment:.0%} of requests" if per_request_goodput(points) else "at p99")
        title = f"Goodput per GPU under SLOs ({_slo_text(slo_ttft_ms, slo_itl_ms)}, {how})"
        figures["goodput"] = (title, "good requests / s per GPU", _line("goodput_per_gpu"))
    else:
        frame = points
    colors = series_colors(points)
    paths = {name: out_dir / f"{name}.png" for name in figures}

    def save(name: str) -> None:
        title, ylabel, draw = figures[name]
        xlabel = "tokens / s per user (1000 / mean TPOT)" if name == "pareto" else "max concurrency"
        figure = _panels(frame, colors, draw, title, xlabel, ylabel)
        figure.savefig(paths[name], dpi=_DPI, pil_kwargs=_PNG)

    run_side_by_side([functools.partial(save, name) for name in figures])
    return paths


def _slo_text(slo_ttft_ms: float | None, slo_itl_ms: float | None) -> str:
    parts = []
    if slo_ttft_ms is not None:
        parts.append(f"TTFT ≤ {slo_ttft_ms:g} ms")
    if slo_itl_ms is not None:
        parts.append(f"ITL ≤ {slo_itl_ms:g} ms")
    return ", ".join(parts)


def _panels(
    points: pd.DataFrame, colors: dict[str, str], draw: Draw, title: str, xlabel: str, ylabel: str
) -> Figure:
    panels = list(dict.fromkeys(points["panel"]))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    # Fixed margins (inches) instead of constrained layout: it halves the time to draw.
    width, height = (5.2 * ncols if ncols > 1 else 7.5), 3.4 * nrows + 1.4
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.8 / width, right=1 - 0.25 / width, top=1 - 0.55 / height,
                           bottom=1.15 / height, hspace=0.5, wspace=0.3)  # fmt: skip
    axes = figure.subplots(nrows, ncols, squeeze=False).flatten()
    for ax, panel in zip(axes, panels, strict=False):
        in_panel = points[points["panel"] == panel]
        for series, group in in_panel.groupby("series", sort=False):
            draw(ax, group.sort_values("concurrency"), colors[str(series)])
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
        # Room above and right of the extreme points, so markers and labels are not clipped.
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
        if draw is _pareto:
            ax.set_xlim(0, ax.get_xlim()[1] * 1.08)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, marker="o", label=name) for name, c in colors.items()]
    figure.legend(handles=handles, loc="lower center", ncols=min(len(handles), 7), fontsize=9)
    figure.suptitle(title, fontweight="bold")
    return figure


def _line(solid: str, dashed: str | None = None) -> Draw:
    def draw(ax: Any, group: pd.DataFrame, color: str) -> None:
        ax.plot(group["concurrency"], group[solid], "o-", color=color, linewidth=2)
        if dashed is not None:
            ax.plot(group["concurrency"], group[dashed], "s--", color=color, alpha=0.7)

    return draw


def _pareto(ax: Any, group: pd.DataFrame, color: str) -> None:
    ordered = group.sort_values("tokens_per_user")
    ax.plot(ordered["tokens_per_user"], ordered["output_per_gpu"], "o-", color=color, linewidth=2)
    for _, row in ordered.iterrows():
        ax.annotate(f"c{row['concurrency']:g}", (row["tokens_per_user"], row["output_per_gpu"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)  # fmt: skip
