"""How long does ``invoke plot`` take over 59 real result files?

Copies the real GH200 result files (``shared/reference-results``, 45 one-row files) into a
temporary directory, adds copies of the first ones under other names (``copy<i>_<name>``) until
there are ``--files`` (59), then times ``invoke plot --path DIR --out OUT`` as a subprocess,
``--runs`` rounds (median; wall time and the CPU time of the process and its children), checks
each run wrote the two PNGs and printed the summary, and profiles one run (cProfile,
``--profile N`` lines, cumulative; forked figure processes are not in it). With ``--baseline
DIR`` the same runs of another checkout (e.g. main) alternate with these, and the two are
compared: printed output (identical expected) and PNG bytes.

Goal (issue 8): under 3 s; it took 6.6 s before the redesign.

Measured 2026-12-01 on the 2 shared cores, 59 files, 7 rounds, load average 2.4, baseline =
the redesign's tip (ab34c71): this 3.93 s (min 3.20 s, CPU 4.10 s), baseline 5.65 s (min 4.75 s,
CPU 5.61 s). Printed output identical; PNGs the same picture (a unit test bounds the pixels
that differ in anti-aliasing), so their bytes differ. Where the CPU goes (this): imports 1.4 s
(pandas 0.6, matplotlib 0.5, invoke + pydantic settings 0.3), each bar chart about 1.1 s
(building 0.2, placing the axes 0.3, drawing its ~190 labels glyph by glyph with matplotlib
3.11's Agg text and writing the PNG 0.6), the rest 0.3 s. The two charts are drawn in two
processes; that halves their part only when a core is free, and here, with both cores busy
with other sessions' work, wall time stays about CPU time: the goal holds on an idle 2-core
machine (estimate 2.6-2.9 s), not under this load.

Usage: ``.venv/bin/python benchmarks/plot_speed.py [--runs 5] [--files 59] [--profile 25]
[--baseline ../main]``
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# As tests/conftest.py finds them: beside the checkout in shared/, or $SGLBENCH_REFERENCE_RESULTS.
REFERENCE = Path(os.environ.get("SGLBENCH_REFERENCE_RESULTS",
                                REPO.parent / "shared" / "reference-results"))  # fmt: skip
PNGS = ("throughput_by_tag.png", "e2e_latency_by_tag.png")


def reference_dir() -> Path:
    """The reference results: $SGLBENCH_REFERENCE_RESULTS, else ``shared/`` beside the checkout
    (a worktree under ``wt/`` looks one level further up)."""
    for candidate in (REFERENCE, REPO.parents[1] / "shared" / "reference-results"):
        if any(candidate.glob("*.jsonl")):
            return candidate
    raise SystemExit(f"no *.jsonl in {REFERENCE}; set SGLBENCH_REFERENCE_RESULTS")


def fill(results: Path, count: int) -> int:
    """Copy the reference files into ``results``, plus renamed copies up to ``count`` files."""
    files = sorted(reference_dir().glob("*.jsonl"))
    for f in files:
        shutil.copy(f, results / f.name)
    for i in range(count - len(files)):
        src = files[i % len(files)]
        shutil.copy(src, results / f"copy{i}_{src.name}")
    return len(list(results.glob("*.jsonl")))


def invoke_env(env_file: Path, checkout: Path = REPO) -> dict[str, str]:
    """``checkout``'s sglbench first, an empty settings file, nothing from the hub."""
    env_file.touch()
    env = dict(os.environ, HF_HUB_OFFLINE="1", SGLBENCH_ENV_FILE=str(env_file))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), env.get("PYTHONPATH")) if p)
    return env


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_plot(results: Path, out: Path, checkout: Path = REPO) -> tuple[float, float, str]:
    """One ``invoke plot`` run: (wall s, CPU s, stdout); fails loudly if it did not plot."""
    out.mkdir(parents=True, exist_ok=True)
    for png in PNGS:
        (out / png).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "invoke", "plot", "--path", str(results), "--out", str(out)]
    cpu0, t0 = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, cwd=checkout, env=invoke_env(out / "empty.env", checkout),
                          capture_output=True, text=True)  # fmt: skip
    seconds, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if done.returncode != 0 or not all((out / p).is_file() for p in PNGS):
        raise SystemExit(f"invoke plot failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return seconds, cpu, done.stdout


def profile(results: Path, out: Path, lines: int) -> str:
    """cProfile of one ``invoke plot`` run (imports included): the top ``lines``, cumulative."""
    with tempfile.NamedTemporaryFile(suffix=".prof") as stats:
        argv = [sys.executable, "-m", "cProfile", "-o", stats.name, "-m", "invoke", "plot",
                "--path", str(results), "--out", str(out)]  # fmt: skip
        subprocess.run(argv, cwd=REPO, env=invoke_env(out / "empty.env"), capture_output=True,
                       check=True)  # fmt: skip
        text = io.StringIO()
        pstats.Stats(stats.name, stream=text).sort_stats("cumulative").print_stats(lines)
    return text.getvalue()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def measure(checkouts: dict[str, Path], results: Path, out: Path,
            runs: int) -> dict[str, list[tuple[float, float]]]:
    """``runs`` rounds of ``invoke plot`` from every checkout (order rotated each round).

    Each writes to ``out/<name>``; every run must print the summary, and every checkout the
    same summary and the same PNG bytes as the first.
    """
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in checkouts}
    names = list(checkouts)
    printed: dict[str, str] = {}
    for i in range(runs):
        for name in names[i % len(names):] + names[: i % len(names)]:
            seconds, cpu, stdout = time_plot(results, out / name, checkouts[name])
            if "Benchmark summary" not in stdout:
                raise SystemExit(f"no summary table in the output:\n{stdout}")
            printed[name] = stdout.replace(str(out / name), "OUT")
            times[name].append((seconds, cpu))
        print(f"round {i + 1}: " + ", ".join(f"{n} {times[n][-1][0]:.2f} s (CPU "
                                             f"{times[n][-1][1]:.2f} s)" for n in names),
              flush=True)  # fmt: skip
    for name in names[1:]:
        same_png = all((out / name / p).read_bytes() == (out / names[0] / p).read_bytes()
                       for p in PNGS)  # fmt: skip
        same_text = printed[name] == printed[names[0]]
        print(f"{name} vs {names[0]}: PNG bytes {'identical' if same_png else 'DIFFER'}, "
              f"printed output {'identical' if same_text else 'DIFFERS'}")  # fmt: skip
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs (median)")
    parser.add_argument("--files", type=int, default=59, help="result files to plot")
    parser.add_argument("--profile", type=int, default=25, help="profile lines (0: none)")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. of main) whose "
                        "`invoke plot` runs in every round too")  # fmt: skip
    args = parser.parse_args()
    print(load())
    checkouts = {"this": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    with tempfile.TemporaryDirectory(prefix="plot-speed-") as tmp:
        results, out = Path(tmp) / "results", Path(tmp) / "out"
        results.mkdir()
        print(f"{fill(results, args.files)} result files in {results}")
        times = measure(checkouts, results, out, args.runs)
        for name, runs in times.items():
            walls, cpus = [w for w, _ in runs], [c for _, c in runs]
            print(f"{name}: invoke plot median {statistics.median(walls):.2f} s over "
                  f"{len(walls)} runs (min {min(walls):.2f}, max {max(walls):.2f}; median CPU "
                  f"{statistics.median(cpus):.2f} s); goal < 3 s")  # fmt: skip
        if args.profile:
            print(profile(results, out / "this", args.profile))
    print(load())


if __name__ == "__main__":
    main()
