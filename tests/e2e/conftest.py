"""e2e fixtures: a real Docker Engine, the registry-free test image, settings on free ports.

The tests use the container names a real run uses (``sglang-agg``, ...), so run them on an
engine that serves no real sglbench run (CI starts its own dockerd, see ``.ci/run``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker_e2e import free_port, ours
from sim_image import build_test_image

from sglbench.execute.docker import close_clients
from sglbench.sim.tokenizer import ensure_offline_tokenizer


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    """The local Docker Engine; the e2e tests skip (visibly) only when none answers."""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker Engine answers ({type(exc).__name__}: {exc}); "
                    "start dockerd (CI does, see .ci/run)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_image(engine: docker.DockerClient) -> str:
    """Tag of the simulator image (built from this host's Python, cached by content hash)."""
    return build_test_image(engine)


@pytest.fixture(scope="session")
def baked_tokenizer_dir() -> Path:
    """The offline tokenizer: baked into the test image at this same path."""
    return ensure_offline_tokenizer()


@pytest.fixture
def clean_engine(engine: docker.DockerClient) -> Iterator[docker.DockerClient]:
    """No container of ours before the test; whatever a failing test left is removed after."""
    for container in ours(engine):
        container.remove(force=True)
    yield engine
    for container in ours(engine):
        container.remove(force=True)
    close_clients()


@pytest.fixture
def e2e_env(tmp_path: Path, test_image: str, baked_tokenizer_dir: Path) -> dict[str, str]:
    """Settings of a docker run on this GPU-less engine: free ports, tiny workload.

    SIMULATE=false: containers run ``python3 -m sglang.launch_server`` exactly as a real run;
    the test image's sglang test double starts the simulator.
    """
    return {
        "RUNTIME": "docker", "SGLANG_IMAGE": test_image, "DOCKER_GPUS": "false",
        # This engine (itself in a container) cannot grant --privileged every capability.
        "DOCKER_PRIVILEGED": "false",
        "SIMULATE": "false", "TOKENIZER_PATH": str(baked_tokenizer_dir),
        "HF_CACHE_DIR": str(tmp_path / "hf"),
        "AGG_HOST": "127.0.0.1", "AGG_PORT": str(free_port()),
        "PREFILL_HOST": "127.0.0.1", "PREFILL_PORT": str(free_port()),
        "DECODE_HOST": "127.0.0.1", "DECODE_PORT": str(free_port()),
        "BOOTSTRAP_PORT": str(free_port()), "IB_DEVICE": "",
        "ROUTER_HOST": "127.0.0.1", "ROUTER_BIND_HOST": "127.0.0.1",
        "ROUTER_PORT": str(free_port()), "ROUTER_PROMETHEUS_PORT": str(free_port()),
        "READY_TIMEOUT_S": "60",
        "BENCH_DATASET": "random-ids", "BENCH_NUM_PROMPTS": "8", "BENCH_INPUT_LEN": "64",
        "BENCH_OUTPUT_LEN": "16", "BENCH_MAX_CONCURRENCY": "4", "BENCH_WARMUP_REQUESTS": "1",
        "RESULTS_DIR": str(tmp_path / "results"), "RUN_DIR": str(tmp_path / "run"),
    }
