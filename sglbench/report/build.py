"""Build report.md and a self-contained report.html (plus PNGs) from result files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sglbench.display import number
from sglbench.errors import ResultsError
from sglbench.record.schema import RunRecord
from sglbench.report.analysis import (
    RATIO_METRICS,
    best_goodput,
    capacity_points,
    measured_points,
    pareto_front,
    per_request_goodput,
    ratio_table,
)
from sglbench.report.capacity import (
    capacity_section,
    slo_description,
    unequal_budget_detail,
    verdict_section,
)
from sglbench.report.plots import plot_sweeps
from sglbench.report.predicted import PREDICTED_TEXT, predicted_section
from sglbench.report.render import Banner, Document, Section, TableData, to_html, to_markdown
from sglbench.report.server_sections import server_sections
from sglbench.report.verdict import verdicts
from sglbench.results.checks import Finding, sanity_checks, workload_mismatches
from sglbench.results.load import load_results, records

SIMULATED_TEXT = (
    "SIMULATED: some or all numbers in this report come from the sglbench simulator, not from "
    "GPUs. They show the pipeline works; they say nothing about real hardware."
)
MISMATCH_TEXT = (
    "WORKLOAD MISMATCH: modes ran different workloads at the same sweep point and were compared "
    "anyway (forced). Read ratios with care; the differences are listed below."
)
GOODPUT_NOTE = (
    "Goodput per request, as SGLang's bench client measures it (`--goodput`): a request is good "
    "when it met every target; a point meets the SLOs when at least {attainment:.0%} of its "
    "requests were good, and its goodput is then the client's good requests/s per GPU (else 0). "
    "An ITL target is checked on each request's TPOT (its mean inter-token time): the client has "
    "no per-request ITL. The table shows the best such point per topology."
)
GOODPUT_P99_NOTE = (
    "These rows carry no per-request attainment (no `--goodput`: an older run), so goodput is "
    "per sweep point: a point counts as meeting the SLOs when its p99 TTFT and p99 ITL are "
    "within them, and its goodput is then its requests/s per GPU (else 0)."
)
UNEQUAL_TEXT = (
    "UNEQUAL GPU BUDGET: the topologies compared hold different numbers of GPUs ({detail}). "
    "Per-GPU figures are comparable; latencies at the same load are not."
)


@dataclass(frozen=True)
class ReportPaths:
    """What ``build_report`` wrote, and what a caller should tell the user about it."""

    markdown: Path
    html: Path
    images: list[Path]
    findings: list[Finding]
    mismatches: list[str]
    simulated: bool
    verdicts: list[str]


def build_report(
    inputs: Sequence[Path],
    out_dir: Path,
    slo_ttft_ms: float | None,
    slo_itl_ms: float | None,
    force: bool = False,
    attainment: float = 0.9,
) -> ReportPaths:
    """Write ``report.md``, ``report.html`` and the report's PNGs into ``out_dir``.

    Args:
        inputs: result files, run directories or results directories (see ``load_results``).
        out_dir: where the report goes (created if missing; existing report files are replaced).
        slo_ttft_ms: TTFT SLO for goodput, or None.
        slo_itl_ms: ITL SLO for goodput, or None (no goodput section when both are None).
        force: compare modes even when their workloads differ (the report then says so).
        attainment: the share of requests that must meet every SLO (BENCH_SLO_ATTAINMENT).

    Raises:
        ResultsError: no results, unreadable results, or differing workloads without ``force``.
    """
    df = load_results(inputs)
    mismatches = workload_mismatches(df)
    if mismatches and not force:
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        raise ResultsError(
            f"workloads differ between modes at {mismatches[0]}{more}; re-run with one workload "
            "for every mode, or pass --force to compare anyway (the report will say so)"
        )
    findings = sanity_checks(df)
    points = measured_points(df)
    images = plot_sweeps(points, out_dir, slo_ttft_ms, slo_itl_ms, attainment)
    runs = _run_metadata(df)
    forced = bool(mismatches) or any(m.forced_mismatch for m in runs.values())
    simulated = bool(df["simulated"].any())
    doc = Document("SGLang benchmark report: aggregated vs PD disaggregated")
    if simulated:
        doc.banners.append(Banner("simulated-banner", SIMULATED_TEXT))
    if forced:
        doc.banners.append(Banner("mismatch-banner", MISMATCH_TEXT))
    if bool(points["predicted"].any()):
        doc.banners.append(Banner("predicted-banner", PREDICTED_TEXT))
    unequal = unequal_budget_detail(points)
    if unequal:
        doc.banners.append(Banner("budget-banner", UNEQUAL_TEXT.format(detail=unequal)))
    capacity = [c for run in runs.values() for c in run.capacity]
    slo_text = slo_description(df, slo_ttft_ms, slo_itl_ms, attainment)
    found = verdicts(points, capacity, attainment=attainment, slo_text=slo_text,
                     simulated=simulated)  # fmt: skip
    doc.sections += [
        verdict_section(found),
        _overview(df, points, inputs, runs),
        _findings_section(findings, mismatches, forced),
        _points_section(points),
        _ratio_section(points),
        capacity_section(capacity_points(df), capacity, slo_text),
        *([beside] if (beside := predicted_section(points)) else []),
        *_figure_sections(points, images, slo_ttft_ms, slo_itl_ms, attainment),
    ]
    server, server_images = server_sections(df, out_dir)  # issue 11: where the time goes
    doc.sections += server
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, page = out_dir / "report.md", out_dir / "report.html"
    markdown.write_text(to_markdown(doc), encoding="utf-8")
    page.write_text(to_html(doc), encoding="utf-8")
    return ReportPaths(markdown, page, [*images.values(), *server_images], findings, mismatches,
                       simulated, [v.text for v in found])  # fmt: skip


def verdict_lines(inputs: Sequence[Path], slo_ttft_ms: float | None, slo_itl_ms: float | None,
                  attainment: float = 0.9) -> list[str]:
    """The verdict of ``inputs`` in a few lines (what ``invoke compare`` prints at its end)."""
    df = load_results(inputs)
    points = measured_points(df)
    runs = _run_metadata(df)
    capacity = [c for run in runs.values() for c in run.capacity]
    slo_text = slo_description(df, slo_ttft_ms, slo_itl_ms, attainment)
    found = verdicts(points, capacity, attainment=attainment, slo_text=slo_text,
                     simulated=bool(df["simulated"].any()))  # fmt: skip
    unequal = unequal_budget_detail(points)
    lines = [v.text for v in found]
    return lines + ([UNEQUAL_TEXT.format(detail=unequal)] if unequal else [])


def _figure_sections(
    points: pd.DataFrame, images: dict[str, Path], slo_ttft_ms: float | None,
    slo_itl_ms: float | None, attainment: float,
) -> list[Section]:
    return [
        Section("Throughput", images=[
            ("Output throughput vs concurrency", images["output_throughput"]),
            ("Total throughput vs concurrency", images["total_throughput"]),
        ]),
        Section("Latency", images=[
            ("TTFT p50 and p99 vs concurrency", images["ttft"]),
            ("ITL p50 and p99 vs concurrency", images["itl"]),
            ("End-to-end latency vs concurrency", images["e2e"]),
        ]),
        _pareto_section(points, images["pareto"]),
        _goodput_section(points, slo_ttft_ms, slo_itl_ms, images.get("goodput"), attainment),
    ]  # fmt: skip


def _run_metadata(df: pd.DataFrame) -> dict[str, RunRecord]:
    runs: dict[str, RunRecord] = {}
    for run_id, path in zip(df["run_id"], df["path"], strict=True):
        if pd.notna(run_id) and str(run_id) not in runs:
            record = RunRecord.load(Path(str(path)).parent)
            if record is not None:
                runs[str(run_id)] = record
    return runs


def _overview(
    df: pd.DataFrame, points: pd.DataFrame, inputs: Sequence[Path], runs: dict[str, RunRecord]
) -> Section:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = Section("Overview", paragraphs=[
        f"Generated {generated} from {', '.join(f'`{p}`' for p in inputs)}: {len(df)} result "
        f"rows in {df['path'].nunique()} files, {len(points)} sweep points, series "
        f"{', '.join(sorted(set(points['series'])))}.",
    ])  # fmt: skip
    gpus = points.drop_duplicates("series")[["series", "gpus", "gpus_source"]]
    section.tables.append(TableData(
        ["series", "GPUs", "GPU count from"],
        [[str(s), str(g), _gpu_source(str(src))] for s, g, src in gpus.itertuples(index=False)],
    ))  # fmt: skip
    if runs:
        section.tables.append(TableData(
            ["run", "started", "ended", "simulated", "git commit", "versions"],
            [[run, m.started or "-", m.ended or "-", str(m.simulated),
              (m.git_commit or "-")[:12], _versions(m.versions)] for run, m in runs.items()],
        ))  # fmt: skip
    return section


def _gpu_source(source: str) -> str:
    if source == "metadata":
        return "run metadata"
    return "assumed from mode name (agg, pd_intra: 1; pd_XpYd: X+Y; other PD: 2)"


def _versions(value: dict[str, str | None]) -> str:
    return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"


def _findings_section(findings: list[Finding], mismatches: list[str], forced: bool) -> Section:
    section = Section("Sanity checks")
    if not findings:
        section.paragraphs.append(
            "No problems found: every request completed, TTFT and ITL look like real streaming, "
            "and output lengths match what was asked (where ignore-eos is known)."
        )
    else:
        section.tables.append(TableData(
            ["severity", "check", "points", "finding"],
            [[f.severity, f.check, f.tag, f.message] for f in findings],
        ))  # fmt: skip
    if forced:
        section.paragraphs.append("Workload differences between modes (compared with force):")
        section.tables.append(TableData(["difference"], [[m] for m in mismatches] or [["-"]]))
    return section


def _points_section(points: pd.DataFrame) -> Section:
    columns = {
        "total_throughput": "total tok/s", "output_per_gpu": "out tok/s/GPU",
        "output_per_decode_gpu": "out tok/s/decode GPU",
        "input_per_prefill_gpu": "in tok/s/prefill GPU", "total_per_gpu": "total tok/s/GPU",
        "median_ttft_ms": "TTFT p50 ms", "p99_ttft_ms": "TTFT p99 ms",
        "median_itl_ms": "ITL p50 ms", "p99_itl_ms": "ITL p99 ms",
        "mean_e2e_ms": "E2E mean ms", "tokens_per_user": "tok/s/user",
    }  # fmt: skip
    rows = [
        [str(r["series"]), str(r["panel"]), number(r["concurrency"], 0),
         _with_spread(r, "output_throughput"), number(r["gpus"], 0)]
        + [number(r[c]) for c in columns]
        + [str(r["repeats"]), "yes" if r["simulated"] else "no", str(r["tags"])]
        for r in records(points)
    ]  # fmt: skip
    headers = ["series", "workload", "conc", "out tok/s", "GPUs", *columns.values(), "repeats",
               "simulated", "tags"]  # fmt: skip
    return Section(
        "Results per sweep point",
        paragraphs=["Repeated measurements of one point are averaged (± one standard deviation "
                    "over the repeats); tags name the runs. Per-role accounting as InferenceX "
                    "divides it: output tokens per decode GPU, input tokens per prefill GPU "
                    "(aggregated serving does both on every GPU)."],
        tables=[TableData(headers, rows)],
    )


def _with_spread(row: dict[str, Any], metric: str) -> str:
    spread = row.get(f"{metric}_std")
    shown = number(row[metric])
    return f"{shown} ± {number(spread)}" if row.get("repeats", 1) > 1 and spread else shown


def _ratio_section(points: pd.DataFrame) -> Section:
    ratios = ratio_table(points)
    section = Section("PD / aggregated ratios at identical workloads")
    if ratios.empty:
        section.paragraphs.append(
            "No sweep point was measured in aggregated mode and in another mode with an identical "
            "workload, so no ratios are shown."
        )
        return section
    section.paragraphs.append(
        "Each row divides a mode's number by aggregated mode's at the same workload (dataset, "
        "lengths, range ratio, seed, ignore-eos, prompt count, concurrency). Above 1 is better for "
        "throughput, below 1 is better for latency. `same draws`: both sent the same input tokens."
    )
    rows = [
        [str(r["panel"]), number(r["concurrency"], 0), f"{r['series']} / {r['baseline']}"]
        + [number(r[m], 2) for m in RATIO_METRICS]
        + ["yes" if r["same_draws"] else "no"]
        for r in ratios.to_dict("records")
    ]
    headers = ["workload", "conc", "ratio", *RATIO_METRICS.values(), "same draws"]
    section.tables.append(TableData(headers, rows))
    return section


def _pareto_section(points: pd.DataFrame, image: Path) -> Section:
    front = points[pareto_front(points)]
    rows = [
        [str(r["panel"]), str(r["series"]), number(r["concurrency"], 0),
         number(r["tokens_per_user"]), number(r["output_per_gpu"])]
        for r in front.to_dict("records")
    ]  # fmt: skip
    return Section(
        "Pareto view",
        paragraphs=[
            "Output tok/s per GPU (cost) against tok/s per user (1000 / mean TPOT, or mean ITL "
            "when TPOT is missing). Points up and to the right are better; the table lists the "
            "points no other point of the same workload beats on both axes."
        ],
        tables=[TableData(["workload", "series", "conc", "tok/s/user", "out tok/s/GPU"], rows)],
        images=[("Pareto: output tok/s per GPU vs tok/s per user", image)],
    )


def _goodput_section(
    points: pd.DataFrame, slo_ttft_ms: float | None, slo_itl_ms: float | None,
    image: Path | None, attainment: float,
) -> Section:
    section = Section("Goodput under latency SLOs")
    if image is None:
        section.paragraphs.append("No TTFT or ITL SLO was given, so goodput is not computed.")
        return section
    best = best_goodput(points, slo_ttft_ms, slo_itl_ms, attainment)
    section.paragraphs.append(GOODPUT_NOTE.format(attainment=attainment)
                              if per_request_goodput(points) else GOODPUT_P99_NOTE)
    section.tables.append(TableData(
        ["workload", "series", "best conc", "good req/s/GPU", "points meeting SLOs"],
        [[str(r["panel"]), str(r["series"]), number(r["concurrency"], 0),
          number(r["goodput_per_gpu"]), f"{r['points_meeting']} of {r['points']}"]
         for r in best.to_dict("records")],
    ))  # fmt: skip
    section.images.append(("Goodput per GPU vs concurrency", image))
    return section
