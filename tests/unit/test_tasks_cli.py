"""``invoke`` as users type it: every task listed with help, --dry-run starts nothing, user errors
are one line with exit code 2.

Run as real ``invoke`` subprocesses in this checkout (about 0.5 s each); nothing here starts a
server, so these stay fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import tasks
from sglbench.plan.bench import BENCH_MODULE
from sglbench.settings import KEYS
from tests.conftest import REPO, free_ports, offline_env

INVOKE = [sys.executable, "-m", "invoke"]
TASKS = {"setup", "config", "agg", "prefill", "decode", "pd-router", "bench", "plot", "report",
         "status", "logs", "down", "compare", "submit", "demo", "calibrate", "predict"}  # fmt: skip


@dataclass(frozen=True)
class Ran:
    """What a user sees from one invoke command."""

    code: int
    out: str
    err: str


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """A .env on loopback with the run directory inside the test's tmp dir."""
    path = tmp_path / "test.env"
    # Chosen together: ports picked one by one may repeat, and a repeat is a (correct) error.
    agg, prefill, decode, router, metrics, bootstrap = free_ports(6)
    path.write_text(
        "SIMULATE=true\nRUNTIME=process\nAGG_HOST=127.0.0.1\nPREFILL_HOST=127.0.0.1\nDECODE_HOST=127.0.0.1\n"
        f"AGG_PORT={agg}\nPREFILL_PORT={prefill}\nDECODE_PORT={decode}\n"
        f"ROUTER_PORT={router}\nROUTER_PROMETHEUS_PORT={metrics}\n"
        f"BOOTSTRAP_PORT={bootstrap}\nRUN_DIR={tmp_path / 'run'}\n"
        f"RESULTS_DIR={tmp_path / 'results'}\n"
    )
    return path


def invoke(env_file: Path, *args: str) -> Ran:
    """``invoke ARGS`` in this checkout with ``env_file`` as the settings file."""
    env = {k: v for k, v in offline_env().items() if k not in KEYS and "SGLBENCH" not in k}
    env["SGLBENCH_ENV_FILE"] = str(env_file)
    done = subprocess.run([*INVOKE, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    return Ran(done.returncode, done.stdout, done.stderr)


def test_every_task_is_listed_and_every_argument_has_help() -> None:
    names = {name for name in tasks.ns.task_names}
    assert names == TASKS
    for name in names:
        for arg in tasks.ns[name].get_arguments():
            assert arg.help, f"invoke {name} --{arg.name}: no help"
    # --dry-run where a task starts, stops or writes something; not where it would do nothing.
    read_only = {"config", "status", "logs"}
    assert {n for n in names
            if any(a.name == "dry_run" for a in tasks.ns[n].get_arguments())} == TASKS - read_only


def test_server_dry_runs_print_the_commands_and_start_nothing(
    env_file: Path, tmp_path: Path
) -> None:
    for role in ("agg", "prefill", "decode"):
        ran = invoke(env_file, role, "--dry-run")
        assert ran.code == 0, ran.err
        assert f"# sglang-{role} (process) -> http://127.0.0.1:" in ran.out
        assert " -m sglbench.sim --model-path Qwen/Qwen2.5-3B-Instruct " in ran.out
    prefill = invoke(env_file, "prefill", "--dry-run", "--set", "NUM_PREFILL=2").out
    assert prefill.count("--disaggregation-mode prefill") == 2
    assert not (tmp_path / "run").exists()


def test_router_and_compare_dry_runs(env_file: Path, tmp_path: Path) -> None:
    router = invoke(env_file, "pd-router", "--dry-run", "--set", "ROUTER_IMPL=mini-lb")
    assert router.code == 0
    assert " -m sglang_router.launch_router --mini-lb --pd-disaggregation --prefill " in router.out
    # The bench client's own dataset (offline), as a real compare would need it too.
    compare = invoke(env_file, "compare", "--dry-run", "--set", "BENCH_DATASET=random-ids",
                     "--set", "BENCH_MAX_CONCURRENCY=4,16")  # fmt: skip
    assert compare.code == 0, compare.err
    headers = [line.split(" ")[1:3] for line in compare.out.splitlines() if line.startswith("# ")]
    assert [h[0] for h in headers] == ["sglang-agg", "bench", "bench", "sglang-prefill",
                                       "sglang-decode", "router", "bench", "bench"]
    assert [h[1] for h in headers if h[0] == "bench"] == [
        "agg_in512_out128_c4_rinf", "agg_in512_out128_c16_rinf",
        "pd_in512_out128_c4_rinf", "pd_in512_out128_c16_rinf"]
    clients = [line for line in compare.out.splitlines() if f" -m {BENCH_MODULE} " in line]
    assert len(clients) == 4 and all("--dataset-name random-ids" in c for c in clients)
    assert "--pd-separated" in clients[2] and "--pd-separated" not in clients[0]
    demo = invoke(env_file, "demo", "--dry-run")
    assert demo.code == 0 and demo.out.count(f" -m {BENCH_MODULE} ") == 4, demo.err
    assert invoke(env_file, "down", "--dry-run").code == 0
    assert invoke(env_file, "setup", "--dry-run").out.strip() == "make setup VENV=.venv"
    assert not (tmp_path / "run").exists()


def test_config_shows_sources_and_masks_secrets(env_file: Path) -> None:
    ran = invoke(env_file, "config", "--set", "HF_TOKEN=hf_veryS3cret", "--set", "AGG_PORT=31000")
    assert ran.code == 0
    assert "hf_veryS3cret" not in ran.out + ran.err
    rows = {line.split("│")[1].strip(): line for line in ran.out.splitlines() if "│" in line}
    assert "********" in rows["HF_TOKEN"] and "command line" in rows["HF_TOKEN"]
    assert "31000" in rows["AGG_PORT"] and "command line" in rows["AGG_PORT"]
    assert ".env" in rows["SIMULATE"] and "default" in rows["MODEL_PATH"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["agg", "--set", "AGG_PORT=0"], "error: AGG_PORT='0' (command line)"),
        (["agg", "--set", "AGG_PROT=1"], "did you mean AGG_PORT?"),
        (["agg", "--set", "AGG_PORT"], "error: --set AGG_PORT: expected KEY=VALUE"),
        (["logs", "nosuch"], "error: logs nosuch: unknown server 'nosuch'"),
        (["logs", "decode", "--set", "NUM_DECODE=2"], "decode has 2 workers"),
        (["bench", "--tag", "t", "--mode", "both"], "error: --mode both: expected auto"),
        (["compare", "--modes", "agg,disagg", "--dry-run"], "error: --modes: 'disagg' is unknown"),
        (["compare", "--modes", "", "--dry-run"], "error: --modes: '' is unknown"),
        (["compare", "--set", "BENCH_DATASET_PATH=/nonexistent/sharegpt.json"],
         "error: BENCH_DATASET_PATH='/nonexistent/sharegpt.json': no such file"),
        (["pd-router", "--detach"], "error: PREFILL_HOST/PREFILL_PORT: prefill worker"),
        (["agg", "--set", "AGG_HOST=192.0.2.7"], "error: AGG_HOST=192.0.2.7: the process"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_start_nothing(
    env_file: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    ran = invoke(env_file, *args)
    assert ran.code == 2, ran.out + ran.err
    assert ran.err.startswith("error: ") and expected in ran.err, ran.err
    assert len(ran.err.strip().splitlines()) == 1 and "Traceback" not in ran.err
    pids = tmp_path / "run" / "pids"
    assert not pids.exists() or not any(pids.iterdir())


def test_plot_dry_run_says_what_it_would_read_and_write(env_file: Path, tmp_path: Path) -> None:
    # Nothing under --path exists: a dry run reads nothing, so it cannot fail on that.
    ran = invoke(env_file, "plot", "--dry-run", "--path", str(tmp_path / "in"),
                 "--out", str(tmp_path / "out"))  # fmt: skip
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == [
        f"would read {tmp_path / 'in'}",
        f"would write {tmp_path / 'out'}/throughput_by_tag.png and e2e_latency_by_tag.png"]
    assert not (tmp_path / "out").exists()


def test_read_only_tasks_have_no_dry_run(env_file: Path) -> None:
    ran = invoke(env_file, "config", "--dry-run")
    assert ran.code != 0 and "--dry-run" in ran.out + ran.err


def test_a_missing_settings_file_named_by_the_environment(tmp_path: Path) -> None:
    ran = invoke(tmp_path / "nope.env", "status")
    assert ran.code == 2 and f"SGLBENCH_ENV_FILE={tmp_path / 'nope.env'}: no such file" in ran.err


def test_debug_shows_the_traceback(env_file: Path) -> None:
    env = {**os.environ, "SGLBENCH_DEBUG": "1"}
    done = subprocess.run([*INVOKE, "agg", "--set", "AGG_PORT=0"], cwd=REPO, capture_output=True,
                          text=True, env={**env, "SGLBENCH_ENV_FILE": str(env_file)})  # fmt: skip
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr


def test_a_reader_that_leaves_early_gets_no_traceback(env_file: Path) -> None:
    env = {k: v for k, v in offline_env().items()
           if k not in KEYS and "SGLBENCH" not in k and k != "PYTHONUNBUFFERED"}  # as in a shell
    # `invoke agg --dry-run | head -1`, with a reader gone before the first line is written.
    proc = subprocess.Popen([*INVOKE, "agg", "--dry-run"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**env, "SGLBENCH_ENV_FILE": str(env_file)})  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and "Traceback" not in err and "Exception" not in err, err
