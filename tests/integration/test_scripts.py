"""The drop-in wrappers scripts/NN_*.sh run the same commands as the tasks they stand for.

``SGLBENCH_DRY_RUN=1`` makes a wrapper pass ``--dry-run``; its output must equal the task's.
Old habits keep working: ``TAG=...`` and the BENCH_* / host variables of the environment,
from any directory. One real run starts the simulator with ``10_run_agg_server.sh`` and
benchmarks it with ``23_bench_agg.sh``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sglbench.settings import KEYS
from tests.conftest import PORT_KEYS, free_ports, listening

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
WRAPPERS = {
    "01_setup_host_venv.sh": ["setup"],
    "10_run_agg_server.sh": ["agg"],
    "20_run_prefill_container.sh": ["prefill"],
    "21_run_decode_container.sh": ["decode"],
    "22_run_router_pd.sh": ["pd-router"],
    "23_bench_agg.sh": ["bench", "--tag", "agg_cg1n1", "--mode", "agg"],
    "24_bench_pd_disagg.sh": ["bench", "--tag", "pd_cg1n1_cg1n2", "--mode", "pd"],
}
class Setup:
    """A loopback simulator .env in a temp dir, and how to run wrappers and tasks with it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)), strict=True))
        self.results = tmp / "results"
        self.run_dir = tmp / "run"
        lines = ["SIMULATE=true", "RUNTIME=process", "IB_DEVICE=", "BENCH_DATASET=random-ids",
                 "SERVER_BIND_HOST=127.0.0.1", "ROUTER_BIND_HOST=127.0.0.1",
                 "READY_TIMEOUT_S=60", f"RUN_DIR={self.run_dir}", f"RESULTS_DIR={self.results}",
                 *(f"{h}=127.0.0.1" for h in ("AGG_HOST", "PREFILL_HOST", "DECODE_HOST",
                                              "ROUTER_HOST")),
                 *(f"{k}={v}" for k, v in self.ports.items())]  # fmt: skip
        (tmp / "test.env").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def environ(self, **more: str) -> dict[str, str]:
        # Only settings this test chooses: a developer's own BENCH_* etc. must not leak in.
        ours = ("BENCH_", "AGG_", "PREFILL_", "DECODE_", "ROUTER_", "SIM_", "SGLBENCH_")
        env = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith(ours)}
        env.pop("TAG", None)
        return {**env, "HF_HUB_OFFLINE": "1", "SGLBENCH_ENV_FILE": str(self.tmp / "test.env"),
                **more}  # fmt: skip

    def wrapper(self, script: str, *args: str, timeout: float = 120,
                **env: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """``bash scripts/SCRIPT`` from the temp dir, with a relative SGLBENCH_ENV_FILE."""
        environ = {**self.environ(**env), "SGLBENCH_ENV_FILE": "test.env"}
        return subprocess.run(["bash", str(ROOT / "scripts" / script), *args], cwd=self.tmp,
                              env=environ, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip

    def task(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(INVOKE), *argv], cwd=ROOT, env=self.environ(),
                              capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


DryRun = tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Setup, dict[str, DryRun]]:
    """Each wrapper with SGLBENCH_DRY_RUN=1 and its task with --dry-run, a few at a time."""
    setup = Setup(tmp_path_factory.mktemp("dry"))

    def both(script: str) -> DryRun:
        return (setup.wrapper(script, SGLBENCH_DRY_RUN="1"),
                setup.task(*WRAPPERS[script], "--dry-run"))  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:
        return setup, dict(zip(WRAPPERS, pool.map(both, WRAPPERS), strict=True))


@pytest.mark.parametrize("script", list(WRAPPERS))
def test_wrapper_dry_run_prints_what_the_task_prints(
    dry_runs: tuple[Setup, dict[str, DryRun]], script: str
) -> None:
    setup, runs = dry_runs
    wrapped, direct = runs[script]
    assert (wrapped.returncode, direct.returncode) == (0, 0), wrapped.stderr + direct.stderr
    assert wrapped.stdout == direct.stdout
    assert wrapped.stdout.strip()
    assert not setup.run_dir.exists() or not list(setup.run_dir.rglob("*.pid"))


def test_wrappers_run_what_the_old_scripts_ran(
    dry_runs: tuple[Setup, dict[str, DryRun]],
) -> None:
    setup, runs = dry_runs
    ports = setup.ports
    out = {script: wrapped.stdout for script, (wrapped, _) in runs.items()}
    assert f"--port {ports['AGG_PORT']} --mem-fraction-static 0.9" in out["10_run_agg_server.sh"]
    prefill = out["20_run_prefill_container.sh"]
    assert "--disaggregation-mode prefill" in prefill
    assert f"--disaggregation-bootstrap-port {ports['BOOTSTRAP_PORT']}" in prefill
    assert "--disaggregation-mode decode" in out["21_run_decode_container.sh"]
    assert (f"--prefill http://127.0.0.1:{ports['PREFILL_PORT']} {ports['BOOTSTRAP_PORT']} "
            f"--decode http://127.0.0.1:{ports['DECODE_PORT']}"
            ) in out["22_run_router_pd.sh"]  # fmt: skip
    bench = out["23_bench_agg.sh"]
    assert f"--base-url http://127.0.0.1:{ports['AGG_PORT']}" in bench
    assert f"--output-file {setup.results}/agg_cg1n1.jsonl --tag agg_cg1n1" in bench
    assert "--pd-separated" not in bench
    assert "--pd-separated" in out["24_bench_pd_disagg.sh"]
    assert "--tag pd_cg1n1_cg1n2" in out["24_bench_pd_disagg.sh"]


def test_pd_bench_targets_the_router(dry_runs: tuple[Setup, dict[str, DryRun]]) -> None:
    setup, runs = dry_runs
    pd = runs["24_bench_pd_disagg.sh"][0].stdout
    assert f"--base-url http://127.0.0.1:{setup.ports['ROUTER_PORT']}" in pd


def test_tag_and_bench_variables_pass_through(setup: Setup) -> None:
    out = setup.wrapper("23_bench_agg.sh", SGLBENCH_DRY_RUN="1", TAG="agg_n7_c3",
                        BENCH_NUM_PROMPTS="7", BENCH_MAX_CONCURRENCY="3").stdout  # fmt: skip
    assert "--num-prompts 7" in out
    assert "--max-concurrency 3" in out
    assert f"--output-file {setup.results}/agg_n7_c3.jsonl --tag agg_n7_c3" in out


def test_arguments_pass_through(setup: Setup) -> None:
    out = setup.wrapper("10_run_agg_server.sh", "--dry-run", "--set", "AGG_PORT=31999").stdout
    assert "--port 31999" in out


@pytest.mark.parametrize("where", ["environment", ".env"])
def test_missing_venv_is_one_line(setup: Setup, where: str) -> None:
    missing = str(setup.tmp / "no-venv")
    if where == ".env":
        with (setup.tmp / "test.env").open("a", encoding="utf-8") as env:
            env.write(f'VENV_DIR="{missing}"  # elsewhere\n')
        done = setup.wrapper("10_run_agg_server.sh")
    else:
        done = setup.wrapper("10_run_agg_server.sh", VENV_DIR=missing)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: VENV_DIR={missing} has no invoke; run `make setup` first"]


def test_setup_without_a_venv_runs_make(setup: Setup) -> None:
    missing = str(setup.tmp / "new-venv")
    done = setup.wrapper("01_setup_host_venv.sh", SGLBENCH_DRY_RUN="1", VENV_DIR=missing)
    assert (done.returncode, done.stdout) == (0, f"make setup VENV={missing}\n")


@pytest.fixture
def agg_server(setup: Setup) -> Iterator[Setup]:
    """The simulator started by 10_run_agg_server.sh; stopped by `invoke down` in any case."""
    try:
        started = setup.wrapper("10_run_agg_server.sh", timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        yield setup
    finally:
        setup.task("down")
    assert not listening(setup.ports["AGG_PORT"]), "invoke down left the simulator running"


def test_agg_wrappers_for_real_on_the_simulator(agg_server: Setup) -> None:
    done = agg_server.wrapper("23_bench_agg.sh", timeout=300, TAG="agg_script",
                              BENCH_NUM_PROMPTS="6", BENCH_INPUT_LEN="32",
                              BENCH_OUTPUT_LEN="8", BENCH_MAX_CONCURRENCY="3")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in
            (agg_server.results / "agg_script.jsonl").read_text().splitlines()]  # fmt: skip
    assert len(rows) == 1
    assert (rows[0]["tag"], rows[0]["completed"], rows[0]["max_concurrency"]) == (
        "agg_script", 6, 3)
    assert rows[0]["random_input_len"] == 32
    assert f"http://127.0.0.1:{agg_server.ports['AGG_PORT']}" in done.stdout
