"""The docker runtime without an engine: pull progress, log lines, dry run, early checks."""

from __future__ import annotations

import pytest

from sglbench.errors import ConfigError
from sglbench.execute.docker import DockerRuntime, endpoint_key, split_lines, where
from sglbench.execute.docker_pull import pull_progress
from sglbench.plan.servers import server_specs
from sglbench.settings import load_settings


def test_pull_progress_sums_every_layer() -> None:
    layers: dict[str, tuple[int, int]] = {}
    down = {"status": "Downloading"}
    pull_progress(layers, {**down, "id": "a", "progressDetail": {"current": 10, "total": 100}})
    assert pull_progress(
        layers, {**down, "id": "b", "progressDetail": {"current": 5, "total": 50}}
    ) == (15, 150)
    assert pull_progress(layers, {"id": "a", "status": "Download complete"}) == (105, 150)
    assert pull_progress(layers, {"id": "b", "status": "Pull complete"}) == (150, 150)
    # Events without sizes (Waiting, Verifying Checksum, the final digest) change nothing.
    assert pull_progress(layers, {"status": "Digest: sha256:abc"}) == (150, 150)


def test_log_lines_are_whole_lines_across_chunks() -> None:
    chunks = [b"first li", b"ne\nsecond\nthi", b"rd \xff", b"\n", b"no newline"]
    assert list(split_lines(chunks)) == ["first line", "second", "third \ufffd", "no newline"]


def test_messages_name_the_engine_and_its_key() -> None:
    assert where("") == "the local engine" and where("ssh://me@n1") == "ssh://me@n1"
    assert endpoint_key("prefill") == "PREFILL_DOCKER_HOST"


def test_dry_run_needs_no_engine() -> None:
    # An endpoint nobody listens on: describe() must not connect.
    settings = load_settings(env_file=None, overrides={
        "RUNTIME": "docker", "DECODE_DOCKER_HOST": "ssh://nobody@192.0.2.1",
        "HF_CACHE_DIR": "/data/hf"}).settings
    command = DockerRuntime(settings).describe(server_specs(settings, "decode")[0])
    assert command.startswith("DOCKER_HOST=ssh://nobody@192.0.2.1 docker run -d")


def test_agg_container_listening_on_loopback_is_refused_before_any_engine_call() -> None:
    # Refused when the settings load, so no task ever reaches an engine with them.
    with pytest.raises(ConfigError, match=r"SERVER_BIND_HOST=127\.0\.0\.1: agg in a container"):
        load_settings(env_file=None, overrides={
            "RUNTIME": "docker", "SERVER_BIND_HOST": "127.0.0.1",
            "AGG_DOCKER_HOST": "ssh://nobody@192.0.2.1"})
