"""Issue 9's fault suite: kill each role (SIGKILL) or the harness itself at a random point of a
small sweep, then `invoke down`, then resume; N times with a fixed seed.

Each case checks what a user at 2 a.m. needs: every finished point kept and parseable, nothing
of ours left running (process, pid file, lock) after `invoke down`, and a resume that measures
exactly the points still missing, each once. ``SGLBENCH_FAULTS`` sets N (default: one case per
target); the seed is fixed, so a failure replays.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sglbench.execute.process import ProcessRuntime
from sglbench.settings import Settings
from tests.conftest import REPO, offline_env
from tests.integration.test_bench import loopback_settings
from tests.integration.test_compare import assert_nothing_left, env_file, run_dirs

pytestmark = pytest.mark.integration

TARGETS = ("agg", "prefill", "decode", "router", "harness")
SEED = 9
POINTS = {"agg": 2, "pd": 2}  # BENCH_MAX_CONCURRENCY=2,4 for each mode
INVOKE = str(Path(sys.executable).with_name("invoke"))


@dataclass(frozen=True)
class Fault:
    """Kill ``target`` once ``after`` points of its mode have rows."""

    target: str
    after: int


def faults() -> list[Fault]:
    rng = random.Random(SEED)
    count = int(os.environ.get("SGLBENCH_FAULTS", len(TARGETS)))
    return [Fault(TARGETS[n % len(TARGETS)], rng.randint(0, 1)) for n in range(count)]


def mode_of(target: str) -> str:
    return "agg" if target in ("agg", "harness") else "pd"


def tags_in(run_dir: Path, mode: str) -> list[str]:
    path = run_dir / f"{mode}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["tag"] for line in path.read_text().splitlines() if line.strip()]


def invoke(settings: Settings, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**offline_env(), "SGLBENCH_ENV_FILE": str(env_file(settings, path))}
    return subprocess.run([INVOKE, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def kill(settings: Settings, fault: Fault, harness: subprocess.Popen[bytes]) -> None:
    if fault.target == "harness":
        harness.send_signal(signal.SIGKILL)
        return
    name = {"agg": "sglang-agg", "prefill": "sglang-prefill", "decode": "sglang-decode",
            "router": "router"}[fault.target]  # fmt: skip
    record = ProcessRuntime(settings).record(name)
    assert record is not None, f"{name} has no pid file"
    os.kill(record.pid, signal.SIGKILL)


def wait_until_killable(settings: Settings, fault: Fault, proc: subprocess.Popen[bytes]) -> Path:
    """Poll until the fault's mode has ``after`` rows and its target runs; return the run dir."""
    deadline = time.monotonic() + 300
    mode = mode_of(fault.target)
    name = {"agg": "sglang-agg", "harness": "sglang-agg", "prefill": "sglang-prefill",
            "decode": "sglang-decode", "router": "router"}[fault.target]  # fmt: skip
    while time.monotonic() < deadline:
        dirs = run_dirs(settings)
        running = ProcessRuntime(settings).record(name) is not None
        if dirs and running and len(tags_in(dirs[0], mode)) >= fault.after:
            return dirs[0]
        if proc.poll() is not None:
            pytest.fail(f"invoke compare exited ({proc.returncode}) before the fault")
        time.sleep(0.2)  # poll interval
    pytest.fail(f"no moment to kill {fault.target} within 300 s")


@pytest.mark.parametrize("fault", faults(), ids=lambda f: f"{f.target}-after-{f.after}")
def test_a_killed_role_or_harness_loses_nothing_and_resume_finishes(
    tmp_path: Path, fault: Fault
) -> None:
    settings = loopback_settings(tmp_path, BENCH_MAX_CONCURRENCY="2,4")
    env = {**offline_env(), "SGLBENCH_ENV_FILE": str(env_file(settings, tmp_path / "f.env"))}
    with (tmp_path / "compare.log").open("wb") as log:
        proc = subprocess.Popen([INVOKE, "compare"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        run_dir = wait_until_killable(settings, fault, proc)
        kill(settings, fault, proc)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code != 0  # a failed run says so
    kept = {m: tags_in(run_dir, m) for m in POINTS}  # every line parses (json.loads above)
    down = invoke(settings, tmp_path / "d.env", "down")
    assert down.returncode == 0, down.stderr
    assert_nothing_left(settings, run_dir)
    assert ProcessRuntime(settings).records() == []
    assert not (Path(settings.run_dir) / "runs").exists() or not any(
        (Path(settings.run_dir) / "runs").iterdir())  # no lock left

    resumed = invoke(settings, tmp_path / "r.env", "compare", "--resume", run_dir.name)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    for mode, count in POINTS.items():
        tags = tags_in(run_dir, mode)
        assert tags[: len(kept[mode])] == kept[mode]  # finished points untouched
        assert len(tags) == count and collections.Counter(tags).most_common(1)[0][1] == 1
    assert_nothing_left(settings, run_dir)
