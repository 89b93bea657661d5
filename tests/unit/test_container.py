"""Container specs equal the original docker run scripts by default, plus labels and --init."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from sglbench.errors import ConfigError
from sglbench.plan.container import (
    LABEL_PROJECT,
    LABEL_RUN_ID,
    container_spec,
    docker_run_command,
    is_ours,
    run_kwargs,
)
from sglbench.plan.servers import server_specs
from sglbench.settings import Settings, load_settings


def _settings(**overrides: str) -> Settings:
    return load_settings(env_file=None, overrides=overrides).settings


def _words(command: str) -> list[str]:
    return shlex.split(command.replace("\\\n", " "))


def test_agg_matches_original_script() -> None:
    settings = _settings(HF_CACHE_DIR="/data/hf")
    cspec = container_spec(settings, server_specs(settings, "agg")[0], "run1")
    words = _words(docker_run_command(cspec))
    assert words[:5] == ["docker", "run", "-d", "--name", "sglang-agg"]
    for flag in ("--gpus", "all", "--ipc=host", "--shm-size=32g", "-p", "30000:30000",
                 "-v", "/data/hf:/root/.cache/huggingface",
                 "HF_HOME=/root/.cache/huggingface", "--init", "lmsysorg/sglang:dev-arm64"):
        assert flag in words
    assert "--network=host" not in words and "--privileged" not in words
    image_at = words.index("lmsysorg/sglang:dev-arm64")
    assert words[image_at + 1:image_at + 4] == ["python3", "-m", "sglang.launch_server"]
    assert words[words.index("--port") + 1] == "30000"
    assert words[words.index("--mem-fraction-static") + 1] == "0.9"


def test_pd_roles_use_host_network_privileged_and_one_gpu() -> None:
    settings = _settings()
    for role in ("prefill", "decode"):
        cspec = container_spec(settings, server_specs(settings, role)[0], "run1")
        words = _words(docker_run_command(cspec))
        assert {"--privileged", "--network=host", '"device=0"'} <= set(words)
        assert "-p" not in words
        kwargs = run_kwargs(cspec)
        assert kwargs["network_mode"] == "host" and "ports" not in kwargs
        assert kwargs["device_requests"] == [{"device_ids": ["0"], "capabilities": [["gpu"]]}]


def test_privileged_can_be_turned_off_for_engines_without_every_capability() -> None:
    settings = _settings(DOCKER_PRIVILEGED="false")
    cspec = container_spec(settings, server_specs(settings, "decode")[0])
    assert "--privileged" not in docker_run_command(cspec)
    assert run_kwargs(cspec)["privileged"] is False and cspec.host_network


def test_agg_sdk_kwargs_map_the_port_and_request_every_gpu() -> None:
    settings = _settings(AGG_PORT="31000")
    kwargs = run_kwargs(container_spec(settings, server_specs(settings, "agg")[0], "r"))
    assert kwargs["ports"] == {"31000/tcp": 31000}
    assert kwargs["device_requests"] == [{"count": -1, "capabilities": [["gpu"]]}]
    assert kwargs["init"] is True and kwargs["ipc_mode"] == "host" and kwargs["shm_size"] == "32g"
    assert kwargs["command"][:3] == ["python3", "-m", "sglang.launch_server"]
    assert "--port" in kwargs["command"] and "31000" in kwargs["command"]


def test_gpu_ids_and_gpus_off() -> None:
    settings = _settings(AGG_GPUS="0,1")
    cspec = container_spec(settings, server_specs(settings, "agg")[0])
    assert '--gpus \'"device=0,1"\'' in docker_run_command(cspec)
    assert run_kwargs(cspec)["device_requests"][0]["device_ids"] == ["0", "1"]
    off = _settings(DOCKER_GPUS="false")
    cspec = container_spec(off, server_specs(off, "prefill")[0])
    assert "--gpus" not in docker_run_command(cspec)
    assert "device_requests" not in run_kwargs(cspec)


def test_hf_token_only_in_sdk_environment() -> None:
    settings = _settings(HF_TOKEN="hf_secret123")
    cspec = container_spec(settings, server_specs(settings, "agg")[0], "r")
    command = docker_run_command(cspec)
    assert "hf_secret123" not in command and "HF_TOKEN=********" in command
    assert "hf_secret123" not in repr(cspec)
    kwargs = run_kwargs(cspec)
    assert kwargs["environment"]["HF_TOKEN"] == "hf_secret123"
    assert "hf_secret123" not in repr(kwargs["labels"])


def test_rdma_devices_only_for_pd_with_ib_device() -> None:
    settings = _settings()
    prefill = run_kwargs(container_spec(settings, server_specs(settings, "prefill")[0]))
    assert prefill["devices"] == ["/dev/infiniband:/dev/infiniband:rwm"]
    assert prefill["ulimits"] == [{"name": "memlock", "soft": -1, "hard": -1}]
    agg = run_kwargs(container_spec(settings, server_specs(settings, "agg")[0]))
    assert "devices" not in agg and "ulimits" not in agg
    for off in (_settings(IB_DEVICE=""), _settings(TRANSFER_BACKEND="fake")):
        decode = container_spec(off, server_specs(off, "decode")[0])
        assert "--device" not in docker_run_command(decode)
        assert "devices" not in run_kwargs(decode)


def test_labels_mark_ours_with_role_and_run_id() -> None:
    settings = _settings(NUM_DECODE="2", DECODE_GPUS="0,1")
    specs = server_specs(settings, "decode")
    cspecs = [container_spec(settings, spec, "20260101-x") for spec in specs]
    assert [c.name for c in cspecs] == ["sglang-decode-0", "sglang-decode-1"]
    assert [c.gpus for c in cspecs] == ["0", "1"]
    labels = cspecs[1].label_map
    assert is_ours(labels) and labels[LABEL_RUN_ID] == "20260101-x"
    assert labels["sglbench.role"] == "decode" and labels["sglbench.url"].endswith(":30002")
    assert not is_ours({}) and not is_ours(None) and not is_ours({LABEL_PROJECT: "other"})


def test_local_engine_expands_home_here() -> None:
    for endpoint in ("", "unix:///var/run/docker.sock"):
        settings = _settings(PREFILL_DOCKER_HOST=endpoint, HF_CACHE_DIR="~/hf")
        cspec = container_spec(settings, server_specs(settings, "prefill")[0])
        assert cspec.volumes[0][0] == str(Path.home() / "hf")
        assert f"-v {Path.home() / 'hf'}:/root/.cache/huggingface" in docker_run_command(cspec)


def test_remote_engine_with_home_or_relative_cache_is_one_line_naming_both_keys() -> None:
    for endpoint, cache in (("ssh://me@node1", "~/.cache/huggingface"),
                            ("tcp://node2:2375", "hf-cache")):
        settings = _settings(DECODE_DOCKER_HOST=endpoint, HF_CACHE_DIR=cache)
        with pytest.raises(ConfigError) as err:
            container_spec(settings, server_specs(settings, "decode")[0])
        message = str(err.value)
        assert "\n" not in message
        assert f"HF_CACHE_DIR={cache}" in message and f"DECODE_DOCKER_HOST={endpoint}" in message
        assert "HF_CACHE_DIR=/home/USER/.cache/huggingface" in message
    # Only the remote role is wrong: the local agg role keeps working with the same settings.
    agg = container_spec(settings, server_specs(settings, "agg")[0])
    assert agg.volumes[0][0] == str(Path("hf-cache").absolute())


def test_remote_engine_keeps_an_absolute_cache_path_as_is() -> None:
    settings = _settings(PREFILL_DOCKER_HOST="ssh://me@node1", HF_CACHE_DIR="/home/me/hf")
    cspec = container_spec(settings, server_specs(settings, "prefill")[0])
    command = docker_run_command(cspec)
    assert command.startswith("DOCKER_HOST=ssh://me@node1 docker run -d")
    assert cspec.volumes[0][0] == "/home/me/hf"
    assert run_kwargs(cspec)["volumes"] == {"/home/me/hf": {"bind": "/root/.cache/huggingface",
                                                            "mode": "rw"}}
    assert LABEL_RUN_ID not in cspec.label_map
