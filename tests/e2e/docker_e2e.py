"""Helpers of the e2e tests: our containers on the engine, free ports, settings, `invoke`."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import docker
from docker.models.containers import Container
from rich.console import Console

from sglbench.plan.container import LABEL_PROJECT, PROJECT
from sglbench.settings import KEYS, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
OURS = {"label": f"{LABEL_PROJECT}={PROJECT}"}


def ours(client: docker.DockerClient) -> list[Container]:
    """Every container with our project label on the engine (running or not)."""
    found: list[Container] = client.containers.list(all=True, filters=OURS)
    return found


def named(client: docker.DockerClient, name: str) -> list[Container]:
    """Containers called exactly ``name`` (the engine's name filter matches substrings)."""
    return [c for c in client.containers.list(all=True, filters={"name": name}) if c.name == name]


def free_port() -> int:
    """A TCP port free on every interface (docker-proxy binds 0.0.0.0)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def quiet_console() -> Console:
    """A console whose output the test can read (``console.file.getvalue()``)."""
    return Console(file=io.StringIO(), width=200)


def settings_of(env: dict[str, str], **changes: str) -> Settings:
    """Validated settings from an e2e env plus changes."""
    return load_settings(env_file=None, overrides={**env, **changes}).settings


def invoke(env: dict[str, str], *args: str, cwd: Path, timeout: float = 240
           ) -> subprocess.CompletedProcess[str]:
    """Run ``invoke ARGS`` as a user would, with ``env`` as its .env file."""
    env_file = cwd / "e2e.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    # Only our .env decides: drop any setting this test process happens to have.
    base = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("SGLBENCH_")}
    proc_env = {**base, "SGLBENCH_ENV_FILE": str(env_file), "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))}
    return subprocess.run([str(INVOKE), "-r", str(REPO), *args], cwd=cwd, env=proc_env,
                          capture_output=True, text=True, timeout=timeout)
