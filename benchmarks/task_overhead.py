"""What does ``invoke bench`` cost on top of SGLang's bench client run by hand?

Starts one simulator (``python -m sglbench.sim``, aggregated, loopback, a free port), asks
``invoke bench --dry-run`` for the client command line it would run, then times ``--pairs``
rounds of

* ``invoke bench --tag task --base-url URL --mode agg`` (settings from the environment:
  RUNTIME=process, SIMULATE=true, BENCH_DATASET=random-ids, BENCH_NUM_PROMPTS, RESULTS_DIR and
  RUN_DIR in a temporary directory, an empty settings file),
* that raw command (``python -m sglang.benchmark.serving ...`` with the simulator's offline
  tokenizer as ``--tokenizer``, as the task gives it), with its own tag and results file, and
* with ``--baseline DIR``, the same ``invoke bench`` from another checkout (e.g. main),

the order rotated each round so that a drift in the machine's load hits all alike. Every run
must append its row. Printed: each round's wall times and ratios, the medians, the ratio of the
medians (the goal) and the median of the per-round ratios.

Goal (issue 8): task / raw <= 1.02; before the redesign it was 1.08 (25.6 s vs 23.2 s).

Measured 2026-12-01 on the 2 shared cores (other sessions' tests running), 100 prompts, 6
rounds, baseline = the redesign's tip (ab34c71):
    load average 2.3:  raw 20.52 s, task 18.44 s (0.899), baseline 18.90 s (0.921)
    load average 6-7:  raw 64.68 s, task 53.29 s (0.824), baseline 56.80 s (0.878)
Single rounds scatter by +-10 % on this machine; read the medians. The task beats the raw
command because its client process ends with ``os._exit`` once its points are done: the raw
client spends about 3 s of CPU unloading torch at exit. Before the client starts, the task
spends about 0.6 s of CPU (Python, invoke, pydantic settings) that the raw command does not.

Usage: ``.venv/bin/python benchmarks/task_overhead.py [--pairs 4] [--num-prompts 100]
[--baseline ../main]``
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "Qwen/Qwen2.5-3B-Instruct"
READY_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This checkout importable, no hub access, plus ``extra``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def start_sim(port: int, log: Path) -> subprocess.Popen[bytes]:
    """The simulator on ``port``; returns once /health_generate answers 200 (with a deadline)."""
    argv = [sys.executable, "-m", "sglbench.sim", "--port", str(port), "--model-path", MODEL]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=child_env(), stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the simulator exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health_generate", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)  # poll interval, not a readiness guess
    stop(proc)
    raise SystemExit(f"the simulator was not ready within {READY_TIMEOUT_S:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def task_env(tmp: Path, num_prompts: int, checkout: Path = REPO) -> dict[str, str]:
    """The settings of the task runs, all from the environment; ``checkout``'s sglbench."""
    env_file = tmp / "empty.env"
    env_file.touch()
    (tmp / "results").mkdir(exist_ok=True)  # the raw client does not create it
    env = child_env({
        "SGLBENCH_ENV_FILE": str(env_file), "RUNTIME": "process", "SIMULATE": "true",
        "BENCH_DATASET": "random-ids", "BENCH_NUM_PROMPTS": str(num_prompts),
        "RESULTS_DIR": str(tmp / "results"), "RUN_DIR": str(tmp / "run"),
    })  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(checkout), env["PYTHONPATH"]])
    return env


def task_argv(tag: str, url: str, *more: str) -> list[str]:
    """``invoke bench`` for ``tag`` against ``url`` (aggregated, no detection)."""
    return [sys.executable, "-m", "invoke", "bench", "--tag", tag, "--base-url", url,
            "--mode", "agg", *more]  # fmt: skip


def raw_command(url: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The client command line ``invoke bench --dry-run`` prints (tag ``raw``), runnable here.

    Leading ``KEY=VALUE`` words become environment; ``python`` becomes this interpreter.
    """
    done = subprocess.run(task_argv("raw", url, "--dry-run"), cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if "sglang.benchmark.serving" in line]
    if len(lines) != 1:
        raise SystemExit(f"expected one client command from --dry-run, got:\n{done.stdout}")
    words = shlex.split(lines[0])
    raw_env = dict(env)
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        raw_env[key] = value
    if words[0] != "python":
        raise SystemExit(f"unexpected client command: {lines[0]}")
    return [sys.executable, *words[1:]], raw_env


@dataclass(frozen=True)
class Run:
    """One kind of timed run: its command, environment and directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path = REPO


def timed(run: Run, log: Path) -> float:
    """Wall seconds of one run (output to ``log``); a failed run stops the benchmark."""
    with log.open("ab") as out:
        t0 = time.perf_counter()
        code = subprocess.run(run.argv, cwd=run.cwd, env=run.env, stdout=out,
                              stderr=subprocess.STDOUT, check=False).returncode  # fmt: skip
        seconds = time.perf_counter() - t0
    if code != 0:
        tail = "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-30:])
        raise SystemExit(f"{shlex.join(run.argv[:4])} ... failed ({code}):\n{tail}")
    return seconds


def rows(path: Path) -> int:
    """Result rows in a JSONL file so far."""
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def measure(runs: dict[str, Run], rounds: int, tmp: Path) -> dict[str, list[float]]:
    """``rounds`` rounds of every run, the order rotated each round; each must add its row."""
    times: dict[str, list[float]] = {kind: [] for kind in runs}
    kinds = list(runs)
    for i in range(rounds):
        for kind in kinds[i % len(kinds):] + kinds[: i % len(kinds)]:
            times[kind].append(timed(runs[kind], tmp / f"{kind}.log"))
        shown = ", ".join(f"{kind} {times[kind][-1]:.2f} s" for kind in kinds)
        ratios = ", ".join(f"{kind}/raw {times[kind][-1] / times['raw'][-1]:.3f}"
                           for kind in kinds if kind != "raw")  # fmt: skip
        print(f"round {i + 1}: {shown}; {ratios}", flush=True)
    counts = {kind: rows(tmp / "results" / f"{kind}.jsonl") for kind in kinds}
    if set(counts.values()) != {rounds}:
        raise SystemExit(f"expected {rounds} rows each, got {json.dumps(counts)}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=4, help="rounds of task and raw (median)")
    parser.add_argument("--num-prompts", type=int, default=100, help="BENCH_NUM_PROMPTS")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. of main) whose "
                        "`invoke bench` runs in every round too, tagged baseline")  # fmt: skip
    args = parser.parse_args()
    print(load())
    with tempfile.TemporaryDirectory(prefix="task-overhead-") as name:
        tmp = Path(name)
        port = free_port()
        sim = start_sim(port, tmp / "sim.log")
        try:
            url = f"http://127.0.0.1:{port}"
            env = task_env(tmp, args.num_prompts)
            raw_argv, raw_env = raw_command(url, env)
            print("raw:", shlex.join(raw_argv))
            runs = {"raw": Run(raw_argv, raw_env), "task": Run(task_argv("task", url), env)}
            if args.baseline:
                base = args.baseline.resolve()
                runs["baseline"] = Run(task_argv("baseline", url),
                                       task_env(tmp, args.num_prompts, base), base)  # fmt: skip
            times = measure(runs, args.pairs, tmp)
        finally:
            stop(sim)
    medians = {kind: statistics.median(t) for kind, t in times.items()}
    print("median: " + ", ".join(f"{kind} {m:.2f} s" for kind, m in medians.items()))
    for kind in (k for k in times if k != "raw"):
        per_round = statistics.median(t / r for t, r in zip(times[kind], times["raw"], strict=True))
        print(f"{kind} / raw: ratio of medians {medians[kind] / medians['raw']:.3f} (median "
              f"per-round ratio {per_round:.3f}; goal <= 1.02)")  # fmt: skip
    print(load())


if __name__ == "__main__":
    main()
