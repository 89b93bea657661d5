"""``make demo``: agg vs PD on the simulator in one command, summary table and the report
(report.md and a self-contained report.html), in under 3 minutes on 2 cores, and nothing left
running afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sglbench.execute.process import ProcessRuntime
from sglbench.settings import KEYS, load_settings
from tests.conftest import REPO, free_port_block, http_status, offline_env

pytestmark = pytest.mark.integration

DEMO_BUDGET_S = 180.0


def demo_command() -> list[str]:
    """``make demo`` once ``make setup`` has run (as in CI), else the task it runs."""
    if (REPO / ".venv" / ".sglbench-installed").exists():
        return ["make", "demo"]
    return [sys.executable, "-m", "invoke", "demo"]


def test_make_demo_compares_agg_and_pd_on_the_simulator(tmp_path: Path) -> None:
    # examples/demo.env as shipped; only ports and directories moved out of the way, through the
    # environment (which a user's shell could do the same way).
    base = free_port_block(5)  # agg x2 on AGG_PORT and AGG_PORT+1, then PD on the same ports
    moved = {"AGG_PORT": str(base), "PREFILL_PORT": str(base), "DECODE_PORT": str(base + 1),
             "BOOTSTRAP_PORT": str(base + 2), "ROUTER_PORT": str(base + 3),
             "ROUTER_PROMETHEUS_PORT": str(base + 4)}  # fmt: skip
    moved |= {"RESULTS_DIR": str(tmp_path / "results"), "RUN_DIR": str(tmp_path / "run")}
    env = {k: v for k, v in offline_env().items() if k not in KEYS and "SGLBENCH" not in k}
    start = time.monotonic()
    done = subprocess.run(demo_command(), cwd=REPO, env={**env, **moved}, capture_output=True,
                          text=True, timeout=DEMO_BUDGET_S + 60)  # fmt: skip
    elapsed = time.monotonic() - start
    settings = load_settings(REPO / "examples" / "demo.env", moved).settings
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout
        for tag in ("agg_x2_in256_out64_c8_rinf", "agg_x2_in256_out64_c32_rinf",
                    "pd_in256_out64_c8_rinf", "pd_in256_out64_c32_rinf"):  # fmt: skip
            assert tag in out
        assert "SIMULATED" in out and "at 2 GPUs" in out  # the verdict, at an equal budget
        reports = [Path(line.split("report: ", 1)[1]) for line in out.splitlines()
                   if line.startswith("report: ")]  # fmt: skip
        assert {p.name for p in reports} == {"report.md", "report.html"}
        html = next(p for p in reports if p.suffix == ".html").read_text()
        assert "SIMULATED" in html and "data:image/png;base64," in html  # plots inlined
        assert elapsed < DEMO_BUDGET_S, f"demo took {elapsed:.0f}s"
        assert ProcessRuntime(settings).records() == []
        for key in ("AGG_PORT", "DECODE_PORT", "ROUTER_PORT"):
            assert http_status(f"http://127.0.0.1:{moved[key]}/health", 1.0) is None
        assert not (Path(moved["RUN_DIR"]) / "runs").exists()  # the run's lock is gone
    finally:
        runtime = ProcessRuntime(settings)
        for record in runtime.records():
            runtime.stop_name(record.name)
