"""``--pull``: SGLANG_IMAGE pulled on every engine a docker role uses, with progress."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from docker.errors import APIError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from sglbench.errors import DockerError
from sglbench.execute.docker import connect, engines, first_line, where
from sglbench.settings import Settings
from sglbench.types import ROLES, Role


def pull_image(settings: Settings, console: Console, roles: Iterable[Role] = ROLES) -> None:
    """Pull SGLANG_IMAGE on every engine a docker role (of ``roles``) uses, with progress.

    Raises:
        DockerError: an engine is unreachable or the pull failed (name, registry, network).
    """
    image = settings.sglang_image
    found = engines(settings, roles)
    if not found:
        console.print("no role uses the docker runtime (RUNTIME=process): nothing to pull")
    for endpoint, key in found.items():
        client = connect(endpoint, key)
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                          console=console, transient=True) as progress:
                task = progress.add_task(f"pulling {image} on {where(endpoint)}", total=None)
                layers: dict[str, tuple[int, int]] = {}
                for event in client.api.pull(image, stream=True, decode=True):
                    _check_pull_event(event, image, endpoint)
                    done, total = pull_progress(layers, event)
                    progress.update(task, completed=done, total=total or None)
        except APIError as exc:
            raise DockerError(f"SGLANG_IMAGE={image}: pull failed on {where(endpoint)}: "
                              f"{first_line(exc)}") from None
        finally:
            client.close()
        console.print(f"pulled {image} on {where(endpoint)}")


def _check_pull_event(event: dict[str, Any], image: str, endpoint: str) -> None:
    if "error" in event:
        raise DockerError(f"SGLANG_IMAGE={image}: pull failed on {where(endpoint)}: "
                          f"{str(event['error']).strip()}")


def pull_progress(layers: dict[str, tuple[int, int]], event: dict[str, Any]) -> tuple[int, int]:
    """Update per-layer (current, total) bytes from one pull event; return the sums."""
    detail = event.get("progressDetail") or {}
    layer = event.get("id")
    if layer and detail.get("total") and event.get("status") == "Downloading":
        layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
    elif layer and layer in layers and event.get("status") in ("Download complete",
                                                               "Pull complete"):
        layers[layer] = (layers[layer][1], layers[layer][1])
    return sum(c for c, _ in layers.values()), sum(t for _, t in layers.values())
