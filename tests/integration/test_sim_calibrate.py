"""calibrate recovers efficiencies it did not know, and predict ranks the splits of a GPU budget.

The "measured" runs are made by the simulator with a profile whose efficiencies were changed:
on the virtual clock for the fitted set, and one real HTTP run measured by SGLang's real bench
client to check what the fitted profile predicts against the live server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sglbench.sim.calibrate import calibrate
from sglbench.sim.points import load_points
from sglbench.sim.predict import predict, write
from sglbench.sim.profiles import load_profile
from sglbench.sim.replay import replay
from sglbench.sim.topology import build
from sglbench.sim.workload import Workload
from tests.conftest import REPO, Procs, offline_env, run_bench_client

pytestmark = pytest.mark.integration

BASE = load_profile("gh200-qwen2.5-3b")
# The "unknown" truth: a slower decode step, a costlier prefill, a slower tokenizer hand-over.
TRUE = replace(
    BASE,
    name="changed",
    efficiency=replace(
        BASE.efficiency,
        step_overhead_ms=BASE.efficiency.step_overhead_ms * 1.5,
        prefill_overhead_ms=BASE.efficiency.prefill_overhead_ms * 1.6,
        handover_ms=BASE.efficiency.handover_ms * 0.5,
        jitter=0.0,
    ),
)
POINTS = [(60, 256, 64, 4), (60, 256, 64, 16), (60, 64, 128, 8), (60, 512, 32, 32),
          (60, 128, 128, 24)]  # fmt: skip
HELD_BACK = (60, 256, 96, 12)
TOLERANCE = 0.10  # recovered efficiencies within 10% of the truth


def _write_runs(directory: Path, shapes: list[tuple[int, int, int, int]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for n, lin, lout, c in shapes:
        w = Workload(n, lin, lout, max_concurrency=c)
        row = replay(build("agg", TRUE), w, tag=f"agg_n{n}_in{lin}_out{lout}_c{c}")
        (directory / f"{row['tag']}.jsonl").write_text(json.dumps(row) + "\n")


def test_calibrate_cli_recovers_changed_efficiencies_and_predicts_a_held_back_point(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    _write_runs(runs, POINTS)
    out = tmp_path / "fitted.json"
    done = subprocess.run(
        [sys.executable, "-m", "sglbench.sim.calibrate", "--path", str(runs), "--out", str(out),
         "--no-loo", "--max-evals", "30", "--quiet"],
        capture_output=True, text=True, timeout=280, env=offline_env(), cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "median |fit error| agg" in done.stdout
    fitted = load_profile(str(out))
    assert fitted.provenance["tool"] == "sglbench.sim.calibrate"
    for name in ("step_overhead_ms", "prefill_overhead_ms"):
        got, truth = getattr(fitted.efficiency, name), getattr(TRUE.efficiency, name)
        assert got == pytest.approx(truth, rel=TOLERANCE), name

    n, lin, lout, c = HELD_BACK
    w = Workload(n, lin, lout, max_concurrency=c)
    truth_row, pred = replay(build("agg", TRUE), w), replay(build("agg", fitted), w)
    for metric in ("output_throughput", "mean_itl_ms", "mean_ttft_ms"):
        assert pred[metric] == pytest.approx(truth_row[metric], rel=0.05), metric


def test_fitted_profile_predicts_a_real_http_run_of_the_changed_server(
    procs: Procs, tmp_path: Path, tokenizer_dir: Path
) -> None:
    runs = tmp_path / "runs"
    _write_runs(runs, POINTS)
    cal = calibrate(load_points([runs]), BASE, loo=False, max_nfev=30)
    true_file = tmp_path / "true.json"
    true_file.write_text(json.dumps(TRUE.to_dict()))
    sim = procs.sim("--sim-profile", str(true_file))
    n, lin, lout, c = 24, 256, 256, 8  # decode-heavy: less of this machine's client in it
    row = run_bench_client(
        sim.url, tokenizer_dir, tmp_path / "agg_http.jsonl", "--backend", "sglang",
        "--num-prompts", str(n), "--random-input-len", str(lin), "--random-output-len",
        str(lout), "--random-range-ratio", "0.0", "--max-concurrency", str(c),
    )  # fmt: skip
    (point,) = load_points([tmp_path / "agg_http.jsonl"])
    assert point.workload.seed == 1  # told from the row's token totals
    pred = replay(build("agg", cal.profiles.main), point.workload)
    print(  # with -s: what the live server measured vs what the fitted model predicts
        {m: (round(row[m], 2), round(pred[m], 2))
         for m in ("output_throughput", "mean_itl_ms", "mean_ttft_ms")}
    )  # fmt: skip
    # The live run adds this machine's client and server CPU: a few ms of TTFT per request at
    # c8 when the machine is idle, tens of ms when other work loads its two cores.
    assert pred["output_throughput"] == pytest.approx(row["output_throughput"], rel=0.10)
    assert pred["mean_itl_ms"] == pytest.approx(row["mean_itl_ms"], rel=0.10)
    assert row["mean_ttft_ms"] - 40 <= pred["mean_ttft_ms"] * 1.25
    assert pred["mean_ttft_ms"] <= row["mean_ttft_ms"] * 1.25


def test_predict_ranks_every_split_of_four_gpus_and_writes_marked_rows(tmp_path: Path) -> None:
    sweep = [Workload(80, 1024, 128, max_concurrency=c) for c in (16, 64)]
    results, summary = predict(BASE, 4, sweep)
    assert sorted(r.topology.name for r in results) == ["1p3d", "2p2d", "3p1d", "aggx4"]
    scores = [t["score"] for t in summary["ranking"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert all(r.topology.gpus == 4 for r in results)
    paths = write(results, summary, tmp_path)
    row = json.loads(Path(paths[0]).read_text().splitlines()[0])
    assert row["predicted"] is True and row["gpus"] == 4 and "output_throughput" in row
    assert json.loads((tmp_path / "prediction.json").read_text())["ranking"][0]["topology"] == (
        summary["ranking"][0]["topology"]
    )
