"""`invoke plot`'s table and PNGs, the compat plot script, and the Markdown/HTML report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from sglbench.errors import ResultsError
from sglbench.report import (
    ReportPaths,
    build_report,
    plot_by_tag,
    plots,
    print_summary,
    summary_table,
)
from sglbench.results.load import load_results
from sglbench.settings import ENV_FILE_VAR, KEYS
from tests.conftest import REFERENCE, needs_reference

ROOT = Path(__file__).resolve().parents[2]
pytestmark = needs_reference
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def raw(name: str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads((REFERENCE / name).read_text())
    return row


def write_run(root: Path, meta: dict[str, Any], modes: dict[str, list[str]]) -> Path:
    """A run directory made of real reference rows: ``{mode: [reference file, ...]}``."""
    run = root / str(meta.get("run_id", "run"))
    run.mkdir(parents=True)
    for mode, names in modes.items():
        rows = [raw(n) | {"tag": f"{mode}_{raw(n)['max_concurrency']}"} for n in names]
        (run / f"{mode}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "metadata.json").write_text(json.dumps(meta))
    return run


@pytest.fixture(scope="module")
def reference_report(tmp_path_factory: pytest.TempPathFactory) -> ReportPaths:
    out = tmp_path_factory.mktemp("report")
    return build_report([REFERENCE], out, slo_ttft_ms=200.0, slo_itl_ms=50.0)


def test_summary_table_carries_the_files_numbers() -> None:
    table = summary_table(load_results([REFERENCE])).set_index("tag")
    expected = raw("agg_n100_in128_out128_c32.jsonl")
    row = table.loc["agg_n100_in128_out128_c32"]
    assert row["output_throughput"] == expected["output_throughput"] == 3190.9358710624765
    assert row["total_throughput"] == expected["total_throughput"]
    assert row["mean_e2e_ms"] == expected["mean_e2e_latency_ms"]
    assert row["mean_ttft_ms"] == expected["mean_ttft_ms"]
    assert len(table) == 45


def test_print_summary_shows_every_tag_and_marks_simulated(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    print_summary(load_results([REFERENCE]), console)
    text = console.export_text()
    assert "pd_1p8d_n100_in2048_out512_c128" in text and "3,191" in text
    assert "SIMULATED" not in text
    run = write_run(tmp_path, {"simulated": True}, {"agg": ["agg_n50_in128_out64_c8.jsonl"]})
    print_summary(load_results([run]), console)
    assert "1 of 1 rows are SIMULATED" in console.export_text()


def test_plot_by_tag_writes_the_two_pngs(tmp_path: Path) -> None:
    paths = plot_by_tag(load_results([REFERENCE]), tmp_path / "plots")
    assert [p.name for p in paths] == ["throughput_by_tag.png", "e2e_latency_by_tag.png"]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 20_000


def test_bar_charts_look_as_in_constrained_layout_saved_tight(tmp_path: Path) -> None:
    """plot_by_tag places its axes itself (a fraction of the cost): the PNG must not change."""
    table = summary_table(load_results([REFERENCE]))
    labels = [f"{t} [{m}]" for t, m in zip(table["tag"], table["mode"], strict=True)]
    args = (labels, {"output tok/s": table["output_throughput"]}, "Throughput", "tok/s")
    plots._bars(*args).savefig(tmp_path / "fast.png", dpi=100)
    before = plots._bars(*args)  # as it was drawn: a 10 in wide figure, constrained, tight
    before.set_size_inches(10, before.get_size_inches()[1] - 2 * (0.1 - 3 / 72))
    before.axes[0].set_in_layout(True)  # placed by hand: constrained layout skipped it
    before.set_layout_engine("constrained")
    before.savefig(tmp_path / "before.png", dpi=100, bbox_inches="tight")
    fast, expected = (np.asarray(Image.open(tmp_path / n), dtype=int)
                      for n in ("fast.png", "before.png"))  # fmt: skip
    assert fast.shape == expected.shape
    differ = np.abs(fast - expected).max(axis=2) > 0  # anti-aliasing of the odd edge only
    assert differ.mean() < 0.001


def test_compat_script_prints_table_and_plots_into_the_results_dir(tmp_path: Path) -> None:
    for name in ("agg_n100_in128_out128_c8.jsonl", "pd_intra_n100_in128_out128_c8.jsonl"):
        shutil.copy(REFERENCE / name, tmp_path)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "plot_benchmarks.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pd_intra_n100_in128_out128_c8" in done.stdout and "1,563" in done.stdout
    assert (tmp_path / "throughput_by_tag.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "e2e_latency_by_tag.png").is_file()


def test_compat_script_defaults_to_results_dir_of_the_env_file_here(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    shutil.copy(REFERENCE / "agg_n100_in128_out128_c8.jsonl", tmp_path / "mine")
    (tmp_path / ".env").write_text("RESULTS_DIR=mine\n", encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if k not in KEYS and k != ENV_FILE_VAR}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "plot_benchmarks.py")], cwd=tmp_path,
        env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "agg_n100_in128_out128_c8" in done.stdout
    assert (tmp_path / "mine" / "throughput_by_tag.png").read_bytes()[:8] == PNG_MAGIC


def test_compat_script_without_results_is_one_line_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "plot_benchmarks.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "invoke bench --tag" in done.stderr
    assert "Traceback" not in done.stderr


def test_reference_report_files_and_sections(reference_report: ReportPaths) -> None:
    markdown = reference_report.markdown.read_text()
    titles = ("Sanity checks", "Results per sweep point", "PD / aggregated ratios", "Throughput",
              "Latency", "Pareto view", "Goodput under latency SLOs")  # fmt: skip
    for title in titles:
        assert f"## {title}" in markdown
    names = {p.name for p in reference_report.images}
    assert names == {"output_throughput.png", "total_throughput.png", "ttft.png", "itl.png",
                     "e2e.png", "pareto.png", "goodput.png"}  # fmt: skip
    for image in reference_report.images:
        assert f"]({image.name})" in markdown and image.read_bytes()[:8] == PNG_MAGIC
    assert not reference_report.simulated and "SIMULATED" not in markdown
    assert reference_report.findings == [] and reference_report.mismatches == []


def test_reference_report_numbers_match_the_files(reference_report: ReportPaths) -> None:
    lines = reference_report.markdown.read_text().splitlines()
    [row] = [ln for ln in lines if ln.endswith("| agg_n100_in128_out128_c32 |")]
    assert f"| {raw('agg_n100_in128_out128_c32.jsonl')['output_throughput']:.1f} |" in row
    # PD/agg ratio at one matched point: pd_intra vs agg, in 128 / out 128, n=100, c32.
    pd_tput = raw("pd_intra_n100_in128_out128_c32.jsonl")["output_throughput"]
    agg_tput = raw("agg_n100_in128_out128_c32.jsonl")["output_throughput"]
    point = "| in 128 / out 128, n=100 | 32 | pd_intra / agg"
    [ratio] = [ln for ln in lines if ln.startswith(point)]
    assert f"| {pd_tput / agg_tput:.2f} |" in ratio and ratio.endswith("| yes |")
    # Every mode of the reference results is in the report.
    for mode in ("agg", "pd_intra", "pd_inter", "pd_1p1d", "pd_1p2d", "pd_1p4d", "pd_1p8d"):
        assert any(ln.startswith(f"| {mode} |") for ln in lines), mode


def test_html_is_self_contained(reference_report: ReportPaths) -> None:
    page = reference_report.html.read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 7 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    assert "<script" not in page and 'id="simulated-banner"' not in page


def test_simulated_run_gets_a_banner(tmp_path: Path) -> None:
    workload = {"dataset": "random", "num_prompts": 100, "seed": 1, "ignore_eos": True}
    meta = {"run_id": "sim-1", "simulated": True, "gpus_per_mode": {"agg": 1, "pd": 2},
            "workload": workload}  # fmt: skip
    run = write_run(tmp_path / "results", meta, {
        "agg": ["agg_n100_in512_out128_c8.jsonl", "agg_n100_in512_out128_c32.jsonl"],
        "pd": ["pd_intra_n100_in512_out128_c8.jsonl", "pd_intra_n100_in512_out128_c32.jsonl"],
    })  # fmt: skip
    paths = build_report([run], tmp_path / "report", None, None)
    assert paths.simulated
    assert "> **SIMULATED:" in paths.markdown.read_text()
    assert '<div class="banner" id="simulated-banner">SIMULATED:' in paths.html.read_text()
    assert "No TTFT or ITL SLO was given" in paths.markdown.read_text()
    assert [f.check for f in paths.findings] == ["simulated"]
    assert "| pd / agg |" in paths.markdown.read_text()
    assert "| sim-1 |" in paths.markdown.read_text()  # the run's metadata is shown


def test_workload_mismatch_is_refused_unless_forced(tmp_path: Path) -> None:
    agg = write_run(tmp_path / "a", {"run_id": "a", "workload": {"seed": 1}},
                    {"agg": ["agg_n100_in128_out128_c8.jsonl"]})  # fmt: skip
    pd = write_run(tmp_path / "b", {"run_id": "b", "workload": {"seed": 2}},
                   {"pd": ["pd_intra_n100_in128_out128_c8.jsonl"]})  # fmt: skip
    with pytest.raises(ResultsError, match=r"workloads differ .* agg \(seed=1\) vs pd \(seed=2\)"):
        build_report([agg, pd], tmp_path / "refused", None, None)
    assert not (tmp_path / "refused" / "report.md").exists()
    paths = build_report([agg, pd], tmp_path / "forced", None, None, force=True)
    markdown = paths.markdown.read_text()
    assert "> **WORKLOAD MISMATCH:" in markdown and "agg (seed=1) vs pd (seed=2)" in markdown
    assert 'id="mismatch-banner"' in paths.html.read_text()
    assert "no ratios are shown" in markdown  # nothing identical to compare


def test_one_uncapped_sharegpt_file_still_reports(tmp_path: Path) -> None:
    row = raw("agg_n50_in128_out64_c8.jsonl") | {
        "tag": None, "max_concurrency": None, "dataset_name": "sharegpt", "request_rate": 4.0,
    }  # fmt: skip
    (tmp_path / "myrun.jsonl").write_text(json.dumps(row) + "\n")
    paths = build_report([tmp_path / "myrun.jsonl"], tmp_path / "out", 100.0, None)
    markdown = paths.markdown.read_text()
    # No cap: the prompt count is the concurrency; no agg/PD pair: no ratios, no crash.
    assert "| agg | n=50, rate 4/s, sharegpt | 50 | 710.8 |" in markdown
    assert "no ratios are shown" in markdown and len(paths.images) == 7
