"""Errors a user meets with the docker runtime: one clear line, and nothing left behind."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import docker
import pytest
from docker_e2e import free_port, invoke, named, ours, quiet_console, settings_of

from sglbench.errors import DockerError, ReadinessError
from sglbench.execute import deploy
from sglbench.execute.docker import DockerRuntime
from sglbench.plan.servers import server_specs

pytestmark = pytest.mark.e2e


def test_gpu_request_without_nvidia_runtime(clean_engine: docker.DockerClient,
                                            e2e_env: dict[str, str], tmp_path: Path) -> None:
    proc = invoke({**e2e_env, "DOCKER_GPUS": "true"}, "agg", cwd=tmp_path)
    assert proc.returncode == 1
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "could not select device driver" in line and "DOCKER_GPUS=false" in line
    assert "Traceback" not in proc.stderr
    # The engine creates the container before it fails to start it: that one must be gone.
    assert named(clean_engine, "sglang-agg") == []


def test_missing_image_offers_pull(clean_engine: docker.DockerClient,
                                   e2e_env: dict[str, str]) -> None:
    settings = settings_of(e2e_env, SGLANG_IMAGE="sglbench-test-missing:never")
    with pytest.raises(DockerError, match=r"SGLANG_IMAGE=sglbench-test-missing:never.*--pull"):
        DockerRuntime(settings).start(server_specs(settings, "agg")[0], "r1")
    assert ours(clean_engine) == []


def test_foreign_container_with_our_name_is_left_alone(
    clean_engine: docker.DockerClient, e2e_env: dict[str, str], test_image: str
) -> None:
    foreign = clean_engine.containers.create(test_image, ["python3", "-c", "pass"],
                                             name="sglang-agg")
    try:
        settings = settings_of(e2e_env)
        runtime = DockerRuntime(settings)
        spec = server_specs(settings, "agg")[0]
        with pytest.raises(DockerError, match=r"not started by sglbench.*docker rm -f sglang-agg"):
            runtime.start(spec, "r1")
        assert runtime.stop(spec) is False
        assert runtime.instances() == []
        assert [c.id for c in named(clean_engine, "sglang-agg")] == [foreign.id]
    finally:
        foreign.remove(force=True)


def test_restart_replaces_only_our_stopped_container(clean_engine: docker.DockerClient,
                                                    e2e_env: dict[str, str]) -> None:
    settings = settings_of(e2e_env)
    runtime = DockerRuntime(settings)
    spec = server_specs(settings, "agg")[0]
    runtime.start(spec, "first")
    # Another run's container that still runs is never replaced (issue 9) ...
    with pytest.raises(DockerError, match=r"sglang-agg of run first still runs on the local "
                                          r"engine; stop it with `invoke down --run first`"):
        runtime.start(spec, "second")
    [(first_id, state)] = [(c.id, c.status) for c in named(clean_engine, "sglang-agg")]
    assert state == "running"
    # ... a stopped one (its run is over) is.
    clean_engine.containers.get(first_id).stop(timeout=5)
    runtime.start(spec, "second")
    [instance] = runtime.instances()
    assert instance.run_id == "second" and instance.name == "sglang-agg"
    assert instance.url == f"http://127.0.0.1:{e2e_env['AGG_PORT']}"
    assert runtime.stop(spec) is True
    assert ours(clean_engine) == []


def test_port_in_use(clean_engine: docker.DockerClient, e2e_env: dict[str, str]) -> None:
    port = free_port()
    settings = settings_of(e2e_env, AGG_PORT=str(port))
    with socket.socket() as taken:
        taken.bind(("", port))
        taken.listen()
        with pytest.raises(DockerError, match=f"AGG_PORT={port}: port already in use"):
            DockerRuntime(settings).start(server_specs(settings, "agg")[0], "r1")
    assert ours(clean_engine) == []


def test_server_exit_while_waiting_fails_at_once_with_its_log(
    clean_engine: docker.DockerClient, e2e_env: dict[str, str]
) -> None:
    settings = settings_of(e2e_env, AGG_EXTRA_ARGS="--sim-no-such-flag", READY_TIMEOUT_S="120")
    with pytest.raises(ReadinessError) as caught:
        deploy.up_role(settings, "agg", run_id="r1", console=quiet_console())
    message = str(caught.value)
    assert "exited (2)" in message or "exited (exit code 2)" in message, message
    assert "--sim-no-such-flag" in message
    assert ours(clean_engine) == []


def test_exited_container_state_logs_and_follow(clean_engine: docker.DockerClient,
                                                e2e_env: dict[str, str]) -> None:
    settings = settings_of(e2e_env, AGG_EXTRA_ARGS="--sim-no-such-flag")
    runtime = DockerRuntime(settings)
    spec = server_specs(settings, "agg")[0]
    runtime.start(spec, "r1")
    # follow=True ends by itself once the container has stopped.
    lines = list(runtime.log_lines(spec, follow=True))
    assert any("--sim-no-such-flag" in line for line in lines)
    assert runtime.exit_code(spec) == 2
    [instance] = runtime.instances()
    assert instance.shown_state == "exited(2)"
    assert runtime.stop(spec) is False  # not running; removed all the same
    assert ours(clean_engine) == []
    assert "--sim-no-such-flag" in runtime.log_tail(spec)  # from the log saved at removal


def test_unreachable_engine_names_the_key(e2e_env: dict[str, str]) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    settings = settings_of(e2e_env, AGG_DOCKER_HOST=endpoint)
    expected = rf"AGG_DOCKER_HOST={re.escape(endpoint)}: Docker engine unreachable \(connection"
    with pytest.raises(DockerError, match=expected):
        DockerRuntime(settings).start(server_specs(settings, "agg")[0], "r1")
