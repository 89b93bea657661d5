"""The user's flows through `invoke` with every server in a container on a real Docker Engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import docker
import pytest
from docker_e2e import invoke, ours

pytestmark = pytest.mark.e2e


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _rows(results: Path, tag: str) -> list[dict[str, object]]:
    lines = (results / f"{tag}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_agg_bench_down(clean_engine: docker.DockerClient, e2e_env: dict[str, str],
                        tmp_path: Path, test_image: str) -> None:
    out = _ok(invoke(e2e_env, "agg", cwd=tmp_path))
    assert f"ready at http://127.0.0.1:{e2e_env['AGG_PORT']}" in out
    [container] = ours(clean_engine)
    assert container.name == "sglang-agg" and container.status == "running"
    assert container.attrs["Config"]["Image"] == test_image
    assert container.attrs["Config"]["Cmd"][:3] == ["python3", "-m", "sglang.launch_server"]
    assert container.attrs["HostConfig"]["Init"] is True

    status = _ok(invoke(e2e_env, "status", cwd=tmp_path))
    assert "sglang-agg" in status and "running" in status
    assert "ready" in _ok(invoke(e2e_env, "logs", "agg", cwd=tmp_path))

    _ok(invoke(e2e_env, "bench", "--tag", "agg_docker", cwd=tmp_path))
    [row] = _rows(Path(e2e_env["RESULTS_DIR"]), "agg_docker")
    assert row["completed"] == 8 and row["tag"] == "agg_docker"

    assert "stopped sglang-agg" in _ok(invoke(e2e_env, "down", cwd=tmp_path))
    assert ours(clean_engine) == []
    # The log outlives the container, for a post-mortem after `down`.
    assert "ready" in (Path(e2e_env["RUN_DIR"]) / "logs" / "sglang-agg.log").read_text()


def test_pd_router_bench_down(clean_engine: docker.DockerClient, e2e_env: dict[str, str],
                              tmp_path: Path) -> None:
    try:
        _ok(invoke(e2e_env, "prefill", cwd=tmp_path))
        _ok(invoke(e2e_env, "decode", cwd=tmp_path))
        by_name = {c.name: c for c in ours(clean_engine)}
        assert sorted(by_name) == ["sglang-decode", "sglang-prefill"]
        for container in by_name.values():
            host = container.attrs["HostConfig"]
            assert host["NetworkMode"] == "host" and host["IpcMode"] == "host"
            assert host["ShmSize"] == 32 * 1024**3 and not host["PortBindings"]
            assert container.labels["sglbench.role"] in ("prefill", "decode")

        _ok(invoke(e2e_env, "pd-router", "--detach", cwd=tmp_path))
        _ok(invoke(e2e_env, "bench", "--tag", "pd_docker", cwd=tmp_path))
        [row] = _rows(Path(e2e_env["RESULTS_DIR"]), "pd_docker")
        assert row["completed"] == 8
    finally:
        down = invoke(e2e_env, "down", cwd=tmp_path)
    out = _ok(down)
    assert "stopped sglang-prefill" in out and "stopped sglang-decode" in out
    assert ours(clean_engine) == []
    assert "nothing of ours" in _ok(invoke(e2e_env, "status", cwd=tmp_path))
