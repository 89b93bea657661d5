"""Which runtime runs what: the one place that builds runtimes from the settings."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from sglbench.errors import ConfigError
from sglbench.execute.runtime import Runtime
from sglbench.settings import Settings
from sglbench.types import RuntimeName, Topology


def runtime_for(settings: Settings, name: RuntimeName) -> Runtime:
    """The runtime called ``name``, built from ``settings``.

    Raises:
        ConfigError: the docker runtime is asked for but not installed in this checkout.
    """
    if name == "process":
        from sglbench.execute.process import ProcessRuntime

        return ProcessRuntime(settings)
    if name == "slurm":
        from sglbench.execute.slurm import SlurmRuntime

        return SlurmRuntime(settings)
    try:
        # Imported lazily: the docker SDK (and an engine) is only needed when a role uses it.
        docker = importlib.import_module("sglbench.execute.docker")
    except ImportError as exc:
        raise ConfigError(
            f"RUNTIME=docker: the docker runtime is not available ({exc}); "
            "use RUNTIME=process or install the docker extra"
        ) from None
    runtime: Runtime = docker.DockerRuntime(settings)
    return runtime


def runtimes_in_use(settings: Settings) -> list[Runtime]:
    """The process runtime (the router always runs here) and docker or slurm when a role uses it."""
    found = [runtime_for(settings, "process")]
    if settings.roles_on("docker"):
        found.append(runtime_for(settings, "docker"))
    if settings.roles_on("slurm"):
        found.append(runtime_for(settings, "slurm"))
    return found


def check_start(settings: Settings, topologies: Sequence[Topology]) -> None:
    """What a runtime can tell before anything starts (Slurm: the allocation, nodes, container).

    Raises:
        ConfigError: one line naming the key or what is missing.
    """
    if settings.roles_on("slurm"):
        from sglbench.execute.slurm_setup import check_start as check_slurm

        check_slurm(settings, topologies)
