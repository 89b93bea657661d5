"""Run isolation: locks on host:ports and GPU ids; live runs are never taken over."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sglbench.errors import ConfigError, ServerError
from sglbench.execute.preflight import check_router_args
from sglbench.execute.runs import acquire, held_by, live_runs, lock_dir, read_locks, release
from sglbench.settings import Settings, load_settings
from sglbench.types import Topology


def make(tmp_path: Path, **keys: str) -> Settings:
    base = {"RUN_DIR": str(tmp_path / "run"), "RUNTIME": "process", "SIMULATE": "true",
            "AGG_HOST": "127.0.0.1", "PREFILL_HOST": "127.0.0.1", "DECODE_HOST": "127.0.0.1",
            "DECODE_PORT": "30010"}  # fmt: skip
    return load_settings(None, {}, {**base, **keys}).settings


def test_a_run_holds_every_listener_of_its_topologies(tmp_path: Path) -> None:
    settings = make(tmp_path)
    held, gpus = held_by(settings, [Topology.aggregated(2), Topology.disaggregated()])
    assert {"127.0.0.1:30000", "127.0.0.1:30001", "127.0.0.1:30010", "127.0.0.1:8998",
            "127.0.0.1:8000", "127.0.0.1:29000"} == set(held)  # fmt: skip
    assert gpus == []  # the simulator holds no GPU
    only_decode, _ = held_by(settings, [Topology.disaggregated()], ["decode"])
    assert only_decode == ["127.0.0.1:30010"]


def test_a_live_run_is_never_taken_over_and_says_how_to_stop_it(tmp_path: Path) -> None:
    settings = make(tmp_path)
    acquire(settings, "run-a", "invoke compare", [Topology.aggregated()])
    with pytest.raises(ServerError, match=r"^127.0.0.1:30000 is held by run run-a \(invoke "
                                          r"compare, .*`invoke down --run run-a`"):
        acquire(settings, "run-b", "invoke agg", [Topology.aggregated()], ["agg"])
    # Other ports: no clash; its own run may hold them again (a resume).
    acquire(settings, "run-b", "invoke decode", [Topology.disaggregated()], ["decode"])
    acquire(settings, "run-a", "invoke compare", [Topology.aggregated()])
    assert sorted(live_runs(settings)) == ["run-a", "run-b"]
    release(settings, "run-a")
    release(settings, "run-b")
    assert not lock_dir(settings).exists()  # nothing left behind


def test_a_lock_whose_owner_and_servers_are_gone_is_stale_and_dropped(tmp_path: Path) -> None:
    settings = make(tmp_path)
    acquire(settings, "run-a", "invoke compare", [Topology.aggregated()])
    (lock,) = read_locks(settings)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    path = lock_dir(settings) / "run-a.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "pid": int(gone.stdout)}))  # a dead owner, no servers
    assert live_runs(settings) == {} and not path.exists()
    acquire(settings, "run-b", "invoke agg", [Topology.aggregated()], ["agg"])  # free again
    assert lock.listeners == ["127.0.0.1:30000"]


def test_gpu_ids_of_another_live_run_are_held_too(tmp_path: Path) -> None:
    settings = make(tmp_path, SIMULATE="false", AGG_GPUS="0,1", PREFILL_GPUS="1",
                    DECODE_GPUS="2", PREFILL_PORT="31000")  # fmt: skip
    acquire(settings, "run-a", "invoke agg", [Topology.aggregated(2)], ["agg"])
    with pytest.raises(ServerError, match=r"^127.0.0.1/1 is held by run run-a"):
        acquire(settings, "run-b", "invoke prefill", [Topology.disaggregated()], ["prefill"])


def test_containers_given_no_gpu_hold_none(tmp_path: Path) -> None:
    """DOCKER_GPUS=false: a prefill and a decode container on one host with the same GPU ids (as
    on a laptop) hold no GPU, so they cannot clash; with GPUs given, they hold them."""
    keys = {"SIMULATE": "false", "RUNTIME": "docker", "SGLANG_IMAGE": "local/sglang:dev",
            "PREFILL_GPUS": "0", "DECODE_GPUS": "0", "PREFILL_PORT": "31000",
            "PREFILL_MEM_FRACTION": "0.45", "DECODE_MEM_FRACTION": "0.45"}  # fmt: skip
    pd = [Topology.disaggregated()]
    assert held_by(make(tmp_path, **keys, DOCKER_GPUS="false"), pd, ["decode"])[1] == []
    assert held_by(make(tmp_path, **keys), pd, ["decode"])[1] == ["127.0.0.1/0"]


@pytest.mark.parametrize("impl", ["rust", "smg"])
def test_router_extra_args_are_judged_by_the_routers_own_parser(tmp_path: Path, impl: str) -> None:
    ok = make(tmp_path, ROUTER_IMPL=impl, ROUTER_EXTRA_ARGS="--request-timeout-secs 30")
    check_router_args(ok)
    bad = make(tmp_path, ROUTER_IMPL=impl, ROUTER_EXTRA_ARGS="--no-such-flag 3")
    with pytest.raises(ConfigError, match=r"^ROUTER_EXTRA_ARGS='--no-such-flag 3': the router "
                                          r"rejects it \(unrecognized arguments: --no-such-flag"):
        check_router_args(bad)
