"""The README is a contract: its "On your GPU nodes" block runs as written, on the simulator.

The block is taken from README.md itself and run by bash, line for line, in a scratch directory
that looks like a checkout (symlinks to tasks.py, the Makefile, .env.example, ...). The
environment points every host at 127.0.0.1 with free ports and turns on the simulator: the
environment overrides `.env`, exactly as it does for a user, so the copied `.env.example` (real
GH200 addresses) is loaded but never reached.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    PORT_KEYS,
    REPO,
    free_port_block,
    free_ports,
    http_status,
    offline_env,
)

pytestmark = pytest.mark.integration

LINKED = [
    "tasks.py", "Makefile", ".env.example", "examples", "scripts", "benchmarks", ".venv",
    "requirements.txt", "requirements-sglang.txt", "requirements-dev.txt", "pyproject.toml",
]  # fmt: skip


def readme_block(heading: str) -> str:
    """The first ```bash block after ``heading`` in README.md."""
    text = (REPO / "README.md").read_text("utf-8")
    after = text.split(f"\n{heading}\n", 1)[1]
    match = re.search(r"```bash\n(.*?)```", after, re.S)
    assert match, f"no bash block under {heading!r}"
    return match.group(1)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A scratch directory that looks like a checkout; skip if the venv is not set up."""
    if subprocess.run(["make", "-q", "setup"], cwd=REPO).returncode != 0:
        pytest.skip("the venv is not up to date: run `make setup` first (CI does)")
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


@pytest.fixture
def sim_env(checkout: Path) -> Iterator[dict[str, str]]:
    """Loopback + simulator settings; whatever the block started is stopped afterwards."""
    env = offline_env()
    env.update(dict(zip(PORT_KEYS, map(str, free_ports(len(PORT_KEYS))), strict=True)))
    env.update({
        "SIMULATE": "true", "RUNTIME": "process", "IB_DEVICE": "",
        "AGG_HOST": "127.0.0.1", "PREFILL_HOST": "127.0.0.1", "DECODE_HOST": "127.0.0.1",
        "ROUTER_HOST": "127.0.0.1", "SERVER_BIND_HOST": "127.0.0.1",
        "ROUTER_BIND_HOST": "127.0.0.1", "READY_TIMEOUT_S": "120",
        "BENCH_DATASET": "random-ids", "BENCH_NUM_PROMPTS": "12", "BENCH_INPUT_LEN": "64",
        "BENCH_OUTPUT_LEN": "16", "BENCH_MAX_CONCURRENCY": "4",
        "RESULTS_DIR": str(checkout / "results"), "RUN_DIR": str(checkout / "run"),
    })  # fmt: skip
    yield env
    subprocess.run([str(REPO / ".venv/bin/invoke"), "down"], cwd=checkout, env=env,
                   capture_output=True, timeout=120)  # fmt: skip


def rows(path: Path) -> list[dict[str, object]]:
    """The JSON lines of a results file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gpu_nodes_block_runs_as_written(checkout: Path, sim_env: dict[str, str]) -> None:
    block = readme_block("## On your GPU nodes")
    assert "invoke pd-router" in block and "invoke compare" in block
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=checkout, env=sim_env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = checkout / "results"
    agg_rows, pd_rows = rows(results / "agg_cg1n1.jsonl"), rows(results / "pd_cg1n1_cg1n2.jsonl")
    assert [r["completed"] for r in agg_rows + pd_rows] == [12, 12]
    # "PD detected from the router": the agg row carries the server's own server_info, the PD
    # row none (the router hides it), so the second bench really went through the router.
    assert agg_rows[0]["server_info"]["disaggregation_mode"] == "null"  # type: ignore[index]
    assert pd_rows[0]["server_info"] is None
    assert (results / "throughput_by_tag.png").stat().st_size > 0
    assert (results / "e2e_latency_by_tag.png").stat().st_size > 0
    (run_dir,) = [p for p in results.iterdir() if (p / "metadata.json").is_file()]
    # The modes' results, and the server metrics scraped around each point (issue 11).
    assert {p.name for p in run_dir.glob("*.jsonl")} == {"agg.jsonl", "pd.jsonl",
                                                         "metrics.jsonl"}
    assert json.loads((run_dir / "metadata.json").read_text())["simulated"] is True
    assert "simulated" in (results / "report" / "report.html").read_text().lower()
    # `invoke down` ran twice in the block; nothing of ours still answers.
    for key in ("AGG_PORT", "PREFILL_PORT", "DECODE_PORT", "ROUTER_PORT"):
        assert http_status(f"http://127.0.0.1:{sim_env[key]}/health", timeout=0.5) is None


def test_fair_verdict_block_runs_as_written(checkout: Path, sim_env: dict[str, str]) -> None:
    """Equal budget on the simulator: agg x2 (workers on AGG_PORT, AGG_PORT+1) against 1P1D."""
    block = readme_block("### A fair verdict: equal GPU budget, SLOs, repeats")
    base = free_port_block(6)
    env = {**sim_env, "AGG_PORT": str(base), "PREFILL_PORT": str(base + 2),
           "DECODE_PORT": str(base + 3), "BOOTSTRAP_PORT": str(base + 4),
           "ROUTER_IMPL": "smg",  # as the GPU-nodes block left it: the venv activated
           "PATH": f"{REPO / '.venv/bin'}{os.pathsep}{sim_env['PATH']}"}  # fmt: skip
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Each compare ends with its verdict under a "verdict" heading (the tmp path says it too).
    assert done.stdout.splitlines().count("verdict") == 2 and "at 2 GPUs" in done.stdout
    runs = sorted(p for p in (checkout / "results").iterdir() if (p / "metadata.json").is_file())
    assert len(runs) == 2
    for run in runs:
        assert {p.name for p in run.glob("*.jsonl")} == {"agg_x2.jsonl", "pd.jsonl",
                                                        "metrics.jsonl"}
        assert json.loads((run / "metadata.json").read_text())["unequal_budget"] is None
    slo_row = rows(runs[1] / "pd.jsonl")[0]
    assert slo_row["goodput_slos_ms"] == {"ttft": 2000.0, "tpot": 50.0}  # the client's own


def test_calibration_command_runs() -> None:
    assert "python benchmarks/sim_calibration.py --direct" in (REPO / "README.md").read_text()
    done = subprocess.run([str(REPO / ".venv/bin/python"), "benchmarks/sim_calibration.py",
                           "--direct"], cwd=REPO, env=offline_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "agg_n100_in128_out128_c32" in done.stdout and "median" in done.stdout
