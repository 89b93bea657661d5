"""Bad input through the real ``invoke`` CLI: one line naming the key, exit 2, nothing started.

A path that cannot be used (a directory under a file) is one line naming the path, exit 1.

Each case writes a temporary ``.env`` (a loopback simulator setup on free ports, RUN_DIR and
RESULTS_DIR in a temp dir) plus the bad part, runs ``.venv/bin/invoke TASK`` as a subprocess
and checks what a user sees: exactly one output line, naming the key or flag, no traceback,
exit code 2; and that nothing was started: no pid files or logs, no result files, nothing
listening on the configured ports.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sglbench.settings import KEYS
from tests.conftest import REFERENCE, listening, loopback_ports, needs_reference

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"


@dataclass(frozen=True)
class Case:
    """One bad input: extra .env text, environment, the task's argv, what the line must name."""

    name: str
    task: list[str]
    names: str
    env: str = ""
    environ: dict[str, str] = field(default_factory=dict)
    code: int = 2
    reads_reference: bool = False  # reads the real GH200 results (skipped where they are absent)


CASES = [
    Case("port_out_of_range", ["agg"], "AGG_PORT", env="AGG_PORT=70000"),
    Case("port_not_a_number", ["prefill"], "PREFILL_PORT", env="PREFILL_PORT=30k"),
    Case("negative_prompts", ["bench", "--tag", "t"], "BENCH_NUM_PROMPTS",
         env="BENCH_NUM_PROMPTS=-5"),
    Case("negative_concurrency_in_sweep", ["compare"], "BENCH_MAX_CONCURRENCY",
         env="BENCH_MAX_CONCURRENCY=8,-1"),
    Case("unknown_transfer_backend", ["prefill"], "TRANSFER_BACKEND", env="TRANSFER_BACKEND=rdma"),
    Case("unknown_bench_backend", ["bench", "--tag", "t"], "BENCH_BACKEND",
         env="BENCH_BACKEND=vllm"),
    Case("unknown_router_impl", ["pd-router"], "ROUTER_IMPL", env="ROUTER_IMPL=nginx"),
    Case("typo_key_in_env_file", ["agg"], "BENCH_NUM_PROMPTS", env="BENCH_NUM_PROMT=10"),
    Case("typo_key_in_environment", ["agg"], "BENCH_NUM_PROMT",
         environ={"BENCH_NUM_PROMT": "10"}),
    Case("typo_key_on_command_line", ["prefill", "--set", "PREFIL_PORT=1"], "PREFIL_PORT"),
    Case("set_without_value", ["agg", "--set", "AGG_PORT"], "--set"),
    Case("bad_bool", ["agg"], "SIMULATE", env="SIMULATE=maybe"),
    Case("bad_mem_fraction", ["agg"], "AGG_MEM_FRACTION", env="AGG_MEM_FRACTION=1.5"),
    Case("colliding_ports", ["decode"], "DECODE_PORT", env="DECODE_PORT={PREFILL_PORT}"),
    Case("bootstrap_port_collision", ["prefill"], "BOOTSTRAP_PORT",
         env="BOOTSTRAP_PORT={PREFILL_PORT}"),
    Case("router_port_is_a_worker_port", ["pd-router"], "ROUTER_PORT",
         env="ROUTER_PORT={DECODE_PORT}"),
    Case("prefill_ports_past_65535", ["prefill"], "PREFILL_PORT",
         env="PREFILL_PORT=65535\nNUM_PREFILL=2"),
    Case("unknown_dataset", ["bench", "--tag", "t"], "BENCH_DATASET", env="BENCH_DATASET=imagenet"),
    Case("bad_request_rate", ["bench", "--tag", "t"], "BENCH_REQUEST_RATE",
         env="BENCH_REQUEST_RATE=fast"),
    Case("zero_request_rate", ["compare"], "BENCH_REQUEST_RATE", env="BENCH_REQUEST_RATE=0,inf"),
    Case("missing_results_for_plot", ["plot"], "{RESULTS_DIR}"),
    Case("missing_results_for_report", ["report", "--path", "{RESULTS_DIR}/none.jsonl"],
         "none.jsonl"),
    Case("router_with_no_decode", ["pd-router"], "NUM_DECODE", env="NUM_DECODE=0"),
    Case("unknown_sim_profile", ["agg"], "SIM_PROFILE", env="SIM_PROFILE=h200-llama"),
    Case("unknown_sim_flag", ["decode"], "SIM_ARGS", env="SIM_ARGS=--sim-speed 2"),
    Case("url_as_host", ["prefill"], "PREFILL_HOST", env="PREFILL_HOST=http://127.0.0.1:1"),
    Case("extra_args_repeat_port", ["agg"], "AGG_EXTRA_ARGS", env="AGG_EXTRA_ARGS=--port 1"),
    Case("unbalanced_quote_in_extra_args", ["decode"], "EXTRA_SERVER_ARGS",
         env="EXTRA_SERVER_ARGS='--tp-size \"2'"),
    Case("unparsable_env_line", ["agg"], "bad.env:", env="BENCH_NUM_PROMPTS 200"),
    Case("unclosed_quote_hides_the_token", ["agg"], "HF_TOKEN", env='HF_TOKEN="hf_SECRETabc'),
    Case("missing_env_file", ["agg"], "SGLBENCH_ENV_FILE",
         environ={"SGLBENCH_ENV_FILE": "{TMP}/absent.env"}),
    Case("unknown_bench_mode", ["bench", "--tag", "t", "--mode", "both"], "--mode"),
    Case("unknown_compare_mode", ["compare", "--modes", "agg,pdd"], "--modes"),
    Case("bad_docker_endpoint", ["decode"], "DECODE_DOCKER_HOST",
         env="DECODE_DOCKER_HOST=cg1n2"),
    Case("bad_gpu_ids", ["agg"], "AGG_GPUS", env="AGG_GPUS=gpu0"),
    Case("report_out_under_a_file", ["report", "--path", str(REFERENCE), "--out", "/dev/null/x"],
         "error: /dev/null/x: Not a directory", code=1, reads_reference=True),
    Case("results_dir_under_a_file", ["compare", "--set", "RESULTS_DIR=/dev/null/x"],
         "error: /dev/null/x", code=1),
    Case("run_dir_under_a_file", ["agg", "--set", "RUN_DIR=/dev/null/x"],
         "error: /dev/null/x", code=1),
    # Issue 9: what used to be found late (after servers started), noisily, or not at all.
    Case("unknown_bench_extra_flag", ["compare"], "BENCH_EXTRA_ARGS",
         env="BENCH_EXTRA_ARGS=--no-such-flag 3"),
    Case("unknown_router_extra_flag", ["compare"], "ROUTER_EXTRA_ARGS",
         env="ROUTER_EXTRA_ARGS=--no-such-flag 3"),
    Case("missing_server_python", ["compare"], "SERVER_PYTHON",
         env="SERVER_PYTHON=/nonexistent/bin/python3"),
    Case("huge_prompt_count", ["compare"], "BENCH_NUM_PROMPTS", env="BENCH_NUM_PROMPTS=1e12"),
    Case("infinite_ready_timeout", ["agg"], "READY_TIMEOUT_S", env="READY_TIMEOUT_S=inf"),
    Case("concurrency_listed_twice", ["compare"], "BENCH_MAX_CONCURRENCY",
         env="BENCH_MAX_CONCURRENCY=8,8"),
    Case("resume_outside_results", ["compare", "--resume", "../../etc"], "--resume"),
    Case("logs_of_a_server_that_never_ran", ["logs", "agg"], "logs agg", code=1),
]


def clean_environ() -> dict[str, str]:
    """This process's environment without any sglbench setting (a developer's may have some)."""
    ours = ("BENCH_", "AGG_", "PREFILL_", "DECODE_", "ROUTER_", "SIM_", "SGLBENCH_")
    env = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith(ours)}
    return {**env, "HF_HUB_OFFLINE": "1"}


@dataclass(frozen=True)
class Outcome:
    """What one case did: its output and what it left behind."""

    returncode: int
    output: str
    fill: dict[str, str]
    leftovers: list[str]


def run_case(case: Case, tmp_path: Path) -> Outcome:
    ports = loopback_ports()
    fill = {**{k: str(v) for k, v in ports.items()}, "TMP": str(tmp_path),
            "RESULTS_DIR": str(tmp_path / "results")}  # fmt: skip
    base = [
        "SIMULATE=true", "RUNTIME=process", "IB_DEVICE=", "BENCH_DATASET=random-ids",
        "SERVER_BIND_HOST=127.0.0.1", "ROUTER_BIND_HOST=127.0.0.1", "READY_TIMEOUT_S=20",
        *(f"{h}=127.0.0.1" for h in ("AGG_HOST", "PREFILL_HOST", "DECODE_HOST", "ROUTER_HOST")),
        *(f"{k}={v}" for k, v in ports.items()),
        f"RUN_DIR={tmp_path / 'run'}", f"RESULTS_DIR={tmp_path / 'results'}",
    ]
    env_file = tmp_path / "bad.env"
    env_file.write_text("\n".join([*base, case.env.format(**fill)]) + "\n", encoding="utf-8")
    (tmp_path / "results").mkdir()
    environ = {**clean_environ(), "SGLBENCH_ENV_FILE": str(env_file),
               **{k: v.format(**fill) for k, v in case.environ.items()}}  # fmt: skip
    done = subprocess.run(
        [str(INVOKE), *(a.format(**fill) for a in case.task)], cwd=ROOT, env=environ,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    leftovers = [str(p) for p in (*(run_dir.rglob("*") if run_dir.exists() else ()),
                                  *(tmp_path / "results").rglob("*"))]  # fmt: skip
    leftovers += [f"{k} {p} is listening" for k, p in ports.items() if listening(p)]
    return Outcome(done.returncode, done.stdout + done.stderr, fill, leftovers)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case, run a few at a time (each invoke spends most of its second starting up)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c.name: pool.submit(run_case, c, tmp_path_factory.mktemp(c.name))
                   for c in CASES}  # fmt: skip
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.name, marks=[needs_reference] if c.reads_reference else [])
    for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_starts(
    case: Case, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes[case.name]
    lines = [line for line in outcome.output.splitlines() if line.strip()]
    assert outcome.returncode == case.code, outcome.output
    assert "Traceback" not in outcome.output
    assert len(lines) == 1, outcome.output
    assert case.names.format(**outcome.fill) in lines[0]
    assert "SECRET" not in outcome.output
    assert outcome.leftovers == []


def test_a_non_utf8_env_file_is_one_line(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_bytes(b"SIMULATE=true\nMODEL_PATH=caf\xe9\n")
    done = subprocess.run([str(INVOKE), "agg", "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**clean_environ(), "SGLBENCH_ENV_FILE": str(env_file)})
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1
    assert lines[0] == f"error: {env_file}:2: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_secret_flag_values_are_masked_in_config_and_dry_runs(tmp_path: Path) -> None:
    env_file = tmp_path / "s.env"
    env_file.write_text("SIMULATE=true\nRUNTIME=process\nBENCH_DATASET=random-ids\n"
                        "ROUTER_EXTRA_ARGS=--api-key SECRETrouter1\n"
                        "AGG_EXTRA_ARGS='--api-key=SECRETagg2'\n")
    env = {**clean_environ(), "SGLBENCH_ENV_FILE": str(env_file)}
    for task in (["config"], ["pd-router", "--dry-run"], ["agg", "--dry-run"],
                 ["compare", "--dry-run"]):
        done = subprocess.run([str(INVOKE), *task], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, check=False, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "SECRET" not in done.stdout + done.stderr, task
        assert "********" in done.stdout, task


def test_a_busy_router_metrics_port_is_found_before_anything_starts(tmp_path: Path) -> None:
    """It was a 47-line Rust panic after the workers had started."""
    ports = loopback_ports()
    env_file = tmp_path / "b.env"
    env_file.write_text("\n".join([
        "SIMULATE=true", "RUNTIME=process", "IB_DEVICE=", "BENCH_DATASET=random-ids",
        *(f"{h}=127.0.0.1" for h in ("AGG_HOST", "PREFILL_HOST", "DECODE_HOST", "ROUTER_HOST")),
        *(f"{k}={v}" for k, v in ports.items()),
        f"RUN_DIR={tmp_path / 'run'}", f"RESULTS_DIR={tmp_path / 'results'}"]) + "\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["ROUTER_PROMETHEUS_PORT"]))
        busy.listen()
        done = subprocess.run([str(INVOKE), "compare", "--modes", "pd"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**clean_environ(), "SGLBENCH_ENV_FILE": str(env_file)})
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stdout + done.stderr
    assert f"127.0.0.1:{ports['ROUTER_PROMETHEUS_PORT']}: something already listens" in lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "run" / "pids").exists()
