"""``invoke calibrate`` and ``invoke predict``: the simulator as a what-if tool.

Both run the simulator's own command lines as subprocesses (the harness never imports the
simulator): ``python -m sglbench.sim.calibrate`` fits a profile to measured runs and prints how
far to trust it; ``python -m sglbench.sim.predict`` simulates every topology of a GPU budget on a
virtual clock. Predictions land in ``RESULTS_DIR/<id>-predicted/`` in the layout of a measured run
(``<mode>.jsonl`` and a ``metadata.json`` marked ``predicted``), so ``invoke report`` reads them,
and puts them beside measured runs of the same topologies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sglbench.commands.machinery import Sets, print_lines
from sglbench.errors import ConfigError, SglbenchError
from sglbench.execute import deploy
from sglbench.execute.provenance import new_record
from sglbench.plan.sweep import SweepPoint, point_tag, sweep_points
from sglbench.record.schema import ModeRecord, now
from sglbench.settings import Settings
from sglbench.types import parse_topology


def calibrate_argv(settings: Settings, paths: Sets, out: str) -> list[str]:
    """The simulator's calibrate command for ``invoke calibrate``."""
    if not paths:
        raise ConfigError("--path: give at least one measured run (a run directory or a result "
                          "file), e.g. invoke calibrate --path results/<run-id>")
    for path in paths:
        if not Path(path).exists():
            raise ConfigError(f"--path {path}: no such run directory or result file")
    target = out or str(Path(settings.results_dir) / "profiles" / "fitted.json")
    argv = [sys.executable, "-m", "sglbench.sim.calibrate", "--profile", settings.sim_profile,
            "--out", target]  # fmt: skip
    for path in paths:
        argv += ["--path", path]
    return argv


def calibrate_task(settings: Settings, paths: Sets, out: str, *, dry_run: bool) -> None:
    """Fit a profile to measured runs; print each point measured vs fitted and the LOO error."""
    argv = calibrate_argv(settings, paths, out)
    if dry_run:
        print_lines([" ".join(argv)])
        return
    Path(argv[argv.index("--out") + 1]).parent.mkdir(parents=True, exist_ok=True)
    _run(argv, "the calibration")
    print(f"use it with: SIM_PROFILE={argv[argv.index('--out') + 1]}")


def predict_argv(settings: Settings, gpus: int, workload: tuple[int, int], out: Path) -> list[str]:
    """The simulator's predict command for one workload of the sweep."""
    concurrency = ",".join(str(c) for c in settings.bench_max_concurrency)
    tps = sorted({settings.agg_tp, settings.prefill_tp, settings.decode_tp})
    argv = [sys.executable, "-m", "sglbench.sim.predict", "--profile", settings.sim_profile,
            "--gpus", str(gpus), "--tp", ",".join(map(str, tps)),
            "--input-len", str(workload[0]), "--output-len", str(workload[1]),
            "--range-ratio", f"{settings.bench_range_ratio:g}",
            "--num-prompts", str(settings.bench_num_prompts), "--concurrency", concurrency,
            "--seed", str(settings.bench_seed),
            "--slo-attainment", f"{settings.bench_slo_attainment:g}", "--out-dir", str(out)]
    if settings.bench_slo_ttft_ms:
        argv += ["--slo-ttft-ms", f"{settings.bench_slo_ttft_ms:g}"]
    per_token = settings.bench_slo_tpot_ms or settings.bench_slo_itl_ms
    if per_token:
        argv += ["--slo-tpot-ms", f"{per_token:g}"]
    return argv  # fmt: skip


def predict_task(settings: Settings, gpus: int, *, dry_run: bool) -> Path | None:
    """Rank the topologies of a GPU budget on the simulator; write them as a predicted run."""
    budget = gpus or settings.compare_gpus
    if not budget:
        raise ConfigError("--gpus: give the GPU budget to predict for (or set COMPARE_GPUS)")
    workloads = list(dict.fromkeys((p.input_len, p.output_len) for p in sweep_points(settings)))
    if dry_run:
        print_lines([" ".join(predict_argv(settings, budget, w, Path("<tmp>"))) for w in workloads])
        return None
    run_id = f"{deploy.new_run_id()}-predicted"
    run_dir = Path(settings.results_dir) / run_id
    run_dir.mkdir(parents=True)
    modes: dict[str, ModeRecord] = {}
    try:
        for workload in workloads:
            with tempfile.TemporaryDirectory() as tmp:
                _run(predict_argv(settings, budget, workload, Path(tmp)), "the prediction")
                modes.update(_adopt(Path(tmp), run_dir, workload))
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    record = new_record(settings, run_id=run_id, modes=list(modes.values()))
    record.simulated, record.predicted, record.ended = True, True, now()
    record.save(run_dir)
    print(f"predicted run: {run_dir} (every number PREDICTED on the simulator's virtual clock)")
    return run_dir


def _adopt(tmp: Path, run_dir: Path, workload: tuple[int, int]) -> dict[str, ModeRecord]:
    """The simulator's predicted_<topology>.jsonl as <mode>.jsonl rows tagged as a run's."""
    modes = {}
    for path in sorted(tmp.glob("predicted_*.jsonl")):
        topology = parse_topology(path.stem.removeprefix("predicted_"))
        modes[topology.name] = ModeRecord.of(topology)
        with (run_dir / f"{topology.name}.jsonl").open("a", encoding="utf-8") as out:
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                point = SweepPoint(workload[0], workload[1], int(row["max_concurrency"]),
                                   float(row["request_rate"]))  # fmt: skip
                row["tag"] = point_tag(topology.name, point)
                out.write(json.dumps(row) + "\n")
    for summary in tmp.glob("prediction.json"):
        shutil.copy(summary, run_dir / f"prediction_in{workload[0]}_out{workload[1]}.json")
    return modes


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, check=False)  # its table and progress go to the terminal
    if done.returncode != 0:
        raise SglbenchError(f"{what} failed (exit code {done.returncode}); its message is above")
