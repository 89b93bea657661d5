"""Helpers of the Slurm tests: the real cluster of ``.ci/slurm-up`` (nodes sgl-n1 and sgl-n2,
partition ``ci``, two fake GPUs each), ``invoke`` inside ``salloc``, and cleanup of our jobs.

The tests run only when a Slurm controller answers; under CI (``CI`` set) they run regardless, so
a missing cluster fails them instead of skipping them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, loopback_ports, offline_env

PARTITION = "ci"
NODES = ("sgl-n1", "sgl-n2")
TEST_JOB_PREFIX = "sglb-test-"
INVOKE = str(Path(sys.executable).with_name("invoke"))


def slurm_answers() -> bool:
    """True when the ``ci`` partition of a running controller answers ``sinfo``."""
    if not Path("/etc/slurm/slurm.conf").exists() and "SLURM_CONF" not in os.environ:
        return False  # without a config sinfo retries for 60 s
    try:
        done = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%D"], capture_output=True,
                              text=True, timeout=15)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip().isdigit()


needs_slurm = pytest.mark.skipif(
    not os.environ.get("CI") and not slurm_answers(),
    reason="no Slurm controller answers (start the test cluster with `bash .ci/slurm-up`)",
)

# The workload of every Slurm test: small, offline, simulated.
WORKLOAD = {
    "SIMULATE": "true", "RUNTIME": "slurm", "IB_DEVICE": "", "BENCH_DATASET": "random-ids",
    "BENCH_NUM_PROMPTS": "16", "BENCH_INPUT_LEN": "64", "BENCH_OUTPUT_LEN": "16",
    "BENCH_MAX_CONCURRENCY": "4,8", "BENCH_RANGE_RATIO": "1", "READY_TIMEOUT_S": "120",
}  # fmt: skip


def slurm_env(tmp_path: Path, **keys: str) -> dict[str, str]:
    """The environment of an ``invoke`` run: a settings file under ``tmp_path``, no Slurm job.

    RESULTS_DIR and RUN_DIR live under ``tmp_path`` (the nodes share this file system).
    """
    values = {**WORKLOAD, **{k: str(v) for k, v in loopback_ports().items()},
              "RESULTS_DIR": str(tmp_path / "results"), "RUN_DIR": str(tmp_path / "run"),
              **keys}  # fmt: skip
    path = tmp_path / "slurm.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {k: v for k, v in offline_env().items() if not k.startswith(("SLURM_", "SBATCH_"))}
    return {**env, "SGLBENCH_ENV_FILE": str(path)}


def setting(env: dict[str, str], key: str) -> str:
    """A value of the run's settings file."""
    text = Path(env["SGLBENCH_ENV_FILE"]).read_text()
    found = re.search(rf"^{key}=(.*)$", text, re.MULTILINE)
    assert found, key
    return found.group(1)


def invoke(env: dict[str, str], *args: str,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``invoke ARGS`` here (outside any allocation), output captured."""
    return subprocess.run([INVOKE, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def salloc(env: dict[str, str], tmp_path: Path, name: str, args: str, *, nodes: int = 2,
           log: str = "salloc.log", script: str = "") -> subprocess.Popen[bytes]:  # fmt: skip
    """``salloc -N<nodes> bash -c 'invoke ARGS; ...'`` (or ``script``) in the background.

    Right after it ends, still inside the allocation, the job's steps are written to
    ``<tmp_path>/steps-left.txt`` (what the run left running), then bash exits with its code.
    """
    left = tmp_path / "steps-left.txt"
    script = (f"{script or f'{INVOKE} {args}'}; rc=$?; "
              f"squeue -h -s -j \"$SLURM_JOB_ID\" -o '%i %j' > {left}; exit $rc")
    with (tmp_path / log).open("wb") as out:
        return subprocess.Popen(["salloc", f"-N{nodes}", "--gpus-per-node=2", "-p", PARTITION,
                                 f"-J{TEST_JOB_PREFIX}{name}", "bash", "-c", script],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)  # fmt: skip


def finish(proc: subprocess.Popen[bytes], timeout: float = 240) -> int:
    """Wait for an salloc; kill it (the job ends with it) if it runs past ``timeout``."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"salloc still running after {timeout:.0f} s")


def wait_for(what: str, predicate: Callable[[], Any], proc: subprocess.Popen[bytes] | None,
             timeout: float = 180) -> Any:  # fmt: skip
    """Poll ``predicate`` until truthy; fail if ``proc`` exits first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(0.2)  # poll interval


def steps() -> list[tuple[str, str]]:
    """(step id, step name) of every step of every job now."""
    done = subprocess.run(["squeue", "-h", "-s", "-o", "%i|%j"], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    pairs = (line.split("|", 1) for line in done.stdout.splitlines() if "|" in line)
    return [(step, name) for step, name in pairs]


def run_dir(env: dict[str, str]) -> Path:
    """The one run directory under RESULTS_DIR."""
    (found,) = [p for p in Path(setting(env, "RESULTS_DIR")).iterdir() if p.is_dir()]
    return found


def rows(path: Path) -> int:
    """Lines of a results file (0 when it does not exist yet)."""
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.fixture
def own_jobs() -> Iterator[None]:
    """Whatever job of these tests is still there at the end is cancelled (by id, ours only)."""
    yield
    done = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    for line in done.stdout.splitlines():
        job, _, name = line.partition("|")
        if name.startswith(TEST_JOB_PREFIX):
            subprocess.run(["scancel", job], timeout=30)
