"""A docker run records which image it ran: the run's metadata names it and its id per engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import docker
import pytest
from docker_e2e import invoke, ours, settings_of

from sglbench.execute.provenance import versions

pytestmark = pytest.mark.e2e
NOWHERE = "unix:///nonexistent/docker.sock"


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_compare_in_docker_records_the_image_id(clean_engine: docker.DockerClient,
                                                e2e_env: dict[str, str], tmp_path: Path,
                                                test_image: str) -> None:
    out = _ok(invoke(e2e_env, "compare", "--modes", "agg", cwd=tmp_path))
    run_dir = Path(out.split("run directory: ", 1)[1].split()[0])
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["versions"]["image"] == test_image
    assert meta["versions"]["image_id@local"] == clean_engine.images.get(test_image).id
    # Built on this engine, so no registry digest: said so, not left blank.
    assert meta["versions"]["image_digest@local"] == "none (not from a registry)"
    [point] = meta["points"]
    assert point["status"] == "ok"
    assert ours(clean_engine) == []  # compare stops what it started


def test_an_engine_that_does_not_answer_is_recorded_not_fatal(
    engine: docker.DockerClient, e2e_env: dict[str, str], test_image: str
) -> None:
    # agg on this engine, prefill and decode on one that is not there.
    settings = settings_of(e2e_env, PREFILL_DOCKER_HOST=NOWHERE, DECODE_DOCKER_HOST=NOWHERE)
    found = versions(settings)
    assert found["image_id@local"] == engine.images.get(test_image).id
    assert found[f"image_id@{NOWHERE}"].startswith("unavailable (PREFILL_DOCKER_HOST=")
    assert "Docker engine unreachable" in found[f"image_digest@{NOWHERE}"]


def test_an_image_missing_on_the_engine_is_named(engine: docker.DockerClient,
                                                 e2e_env: dict[str, str]) -> None:
    found = versions(settings_of(e2e_env, SGLANG_IMAGE="sglbench-test-missing:never"))
    assert found["image"] == "sglbench-test-missing:never"
    assert found["image_id@local"] == found["image_digest@local"] == "not found"
