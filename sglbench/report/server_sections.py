"""The report's server-side sections: TTFT breakdown, KV transfer, queues, cache (issue 11).

Reads only result files: each results file's ``metrics.jsonl`` (``record.metrics``), joined to
the client's rows by tag.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sglbench.display import number
from sglbench.record.metrics import PointMetrics, metrics_file_for, read_points
from sglbench.report.breakdown import REST, Breakdown, kind_of, ttft_breakdown
from sglbench.report.render import Section, TableData
from sglbench.report.server_plots import plot_breakdown, plot_cache, plot_queues
from sglbench.results.load import records
from sglbench.results.server import finite, kv_transfer, prefix_hit_rate

BREAKDOWN_TEXT = (
    "Each bar is one point's mean time to first token as the client measured it, split into "
    "the server stages SGLang reports on /metrics (per-point deltas of its histograms: "
    "`queue_time_seconds` and `per_stage_req_latency_seconds`). The grey rest is the client's "
    "TTFT minus those stages: the router, HTTP and tokenizing, decode noticing the KV, "
    "streaming and the client itself. Decode's own wait (`decode_bootstrap` + "
    "`decode_transferred`) runs in parallel with prefill's stages, so it is a cross-check "
    "column, not a bar. The router's TTFT metrics are not used: smg's `smg_pd_ttft_seconds` is "
    "taken at the decode response head, which SGLang sends before the first token, and "
    "`smg_router_ttft_seconds` exists only on gRPC."
)
NO_METRICS_TEXT = (
    "No server metrics were recorded for these results (runs before server-metrics scraping, "
    "BENCH_SERVER_METRICS=false, or servers that export none), so there is no breakdown."
)


def point_metrics(df: pd.DataFrame) -> list[tuple[dict[str, object], PointMetrics]]:
    """(frame row, its metrics) for every row whose point has a metrics line, in frame order."""
    files: dict[Path, dict[str, PointMetrics]] = {}
    found = []
    for row in records(df):
        path = Path(str(row["path"]))
        if path not in files:
            files[path] = read_points(metrics_file_for(path))
        pm = files[path].get(str(row["tag"]))
        if pm is not None and pm.endpoints:  # a line without scrapes holds only the flush
            found.append((row, pm))
    return found


def _ms(value: float | None) -> str:
    return number(finite(value)) if value is not None else "-"


def _breakdown_table(rows: list[Breakdown]) -> TableData:
    names = list(dict.fromkeys(n for r in rows for n, _ in r.segments))
    table = TableData(["point", "mode", "client TTFT ms", *names, REST, "server TTFT ms",
                       "decode waited ms", "notes"], [])  # fmt: skip
    for r in rows:
        values = dict(r.segments)
        table.rows.append([r.tag, r.kind, _ms(r.client_ttft_ms),
                           *(_ms(values.get(n)) for n in names), _ms(r.rest_ms),
                           _ms(r.server_ttft_ms), _ms(r.decode_waited_ms),
                           "; ".join(r.notes) or "-"])  # fmt: skip
    return table


def _kv_table(points: list[PointMetrics]) -> TableData:
    table = TableData(["point", "transfers", "MB/request", "latency ms", "GB/s (total)",
                       "GB/s (mean)", "bootstrap ms P/D", "alloc ms D",
                       "bootstrap failed P/D", "transfer failed P/D", "router failures"], [])
    for pm in points:
        kv = kv_transfer(pm)
        table.rows.append([
            pm.tag, number(kv.transfers, 0), _ms(kv.mb_per_request), _ms(kv.latency_ms),
            _ms(kv.gbps), _ms(kv.gbps_mean),
            f"{_ms(kv.bootstrap_ms['prefill'])} / {_ms(kv.bootstrap_ms['decode'])}",
            _ms(kv.alloc_ms["decode"]),
            f"{kv.bootstrap_failed['prefill']:g} / {kv.bootstrap_failed['decode']:g}",
            f"{kv.transfer_failed['prefill']:g} / {kv.transfer_failed['decode']:g}",
            f"{kv.router_failures:g}",
        ])  # fmt: skip
    return table


def server_sections(df: pd.DataFrame, out_dir: Path) -> tuple[list[Section], list[Path]]:
    """The sections and the PNGs they show (none but a note when no metrics were recorded)."""
    found = point_metrics(df)
    section = Section("Where the time goes (server metrics)")
    if not found:
        section.paragraphs.append(NO_METRICS_TEXT)
        return [section], []
    usable = [(row, pm) for row, pm in found if not any(e.error for e in pm.endpoints)]
    breakdowns = [ttft_breakdown(pm, finite(_float(row.get("mean_ttft_ms"))))
                  for row, pm in usable]  # fmt: skip
    images = []
    section.paragraphs.append(BREAKDOWN_TEXT)
    if breakdowns:
        images.append(plot_breakdown(breakdowns, out_dir / "ttft_breakdown.png"))
        section.images.append(("TTFT breakdown per point", images[-1]))
        section.tables.append(_breakdown_table(breakdowns))
    skipped = len(found) - len(usable)
    if skipped:
        section.paragraphs.append(f"{skipped} point(s) left out: a scrape failed or a server "
                                  "restarted (see the sanity checks).")
    sections = [section]
    pd_points = [pm for _, pm in usable if kind_of(pm) == "pd"]
    if pd_points:
        sections.append(Section("KV transfer (PD)", paragraphs=[
            "Per point, on the prefill workers unless marked: transfers and their mean size "
            "(MiB), latency and speed (GB/s total = all bytes / all transfer time; mean = mean "
            "of per-request speeds, higher when small transfers are fast). Bootstrap and "
            "transfer failures are counted by both roles, so one failed request can show on "
            "each side."], tables=[_kv_table(pd_points)]))
    queues = _queues_section([pm for _, pm in usable], out_dir)
    sections.append(queues)
    return sections, [*images, *(path for _, path in queues.images)]


def _queues_section(points: list[PointMetrics], out_dir: Path) -> Section:
    hits = [[pm.tag, f"{100 * rate:.1f} %" if (rate := prefix_hit_rate(pm)) is not None
             else "-"] for pm in points]  # fmt: skip
    return Section("Queues and KV cache", paragraphs=[
        "Queue depths are gauges sampled during each point (SGLang updates them at its own "
        "report times, so they lag a little). The prefix-cache hit rate is each point's share "
        "of prompt tokens served from the cache (counter deltas of "
        "`prefill_effective_tokens_total` on the workers that run prefill), not the "
        "`cache_hit_rate` gauge, which holds only the last batch."],
        tables=[TableData(["point", "prefix-cache hits"], hits)],
        images=[("Queue depths over time", plot_queues(points, out_dir / "queue_depths.png")),
                ("KV cache hits and usage", plot_cache(points, out_dir / "kv_cache.png"))])


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
