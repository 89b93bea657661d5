"""The ``docker`` runtime: servers as labelled containers on a local or ``ssh://`` engine.

Everything goes through the docker Python SDK (never the ``docker`` CLI). Each role names its
engine (``AGG_DOCKER_HOST``, ...): empty is the local engine (``DOCKER_HOST`` or the default
socket, as the CLI finds it), ``ssh://user@host[:port]`` a remote one through the SDK's own SSH
support (paramiko: keys and ``~/.ssh/config`` as for ``ssh``; the host key must already be in
``~/.ssh/known_hosts``; the remote user needs the ``docker`` CLI and access to its engine).
Containers carry labels; only containers with our project label are ever replaced, stopped,
listed or removed. Engine failures become one ``DockerError`` line naming the key to change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import paramiko
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from sglbench.errors import DockerError, ServerError
from sglbench.execute.runtime import UNKNOWN_EXIT, Instance
from sglbench.plan.container import (
    LABEL_NAME,
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_RUN_ID,
    LABEL_URL,
    PROJECT,
    container_spec,
    docker_run_command,
    is_ours,
    run_kwargs,
)
from sglbench.plan.servers import Command, ServerSpec
from sglbench.settings import Settings
from sglbench.types import ROLES, Role, RuntimeName

API_TIMEOUT_S = 60
STOP_TIMEOUT_S = 10  # with --init the server gets SIGTERM at once; this is only the fallback
_OURS = {"label": f"{LABEL_PROJECT}={PROJECT}"}
_GPU_MISSING = "could not select device driver"
_PORT_IN_USE = ("address already in use", "port is already allocated")
# One client per engine for the whole process: lifecycle builds a runtime per call, and an ssh://
# client is an SSH connection worth keeping.
_CLIENTS: dict[str, docker.DockerClient] = {}


def where(endpoint: str) -> str:
    """How an endpoint is named in messages."""
    return endpoint or "the local engine"


def endpoint_key(role: str) -> str:
    """The settings key that names a role's engine."""
    return f"{role.upper()}_DOCKER_HOST"


def engines(settings: Settings, roles: Iterable[Role] = ROLES) -> dict[str, str]:
    """Engine endpoint -> the key that names it, for every role (of ``roles``) on docker."""
    found: dict[str, str] = {}
    for role in roles:
        own = settings.role(role)
        if own.runtime == "docker":
            found.setdefault(own.docker_host, own.key("DOCKER_HOST"))
    return found


def _server(spec: Command) -> ServerSpec:
    """The docker runtime runs servers; the router always runs as a local process."""
    if not isinstance(spec, ServerSpec):
        raise ServerError(f"{spec.name}: the docker runtime runs servers only, not the {spec.role}")
    return spec


def connect(endpoint: str, key: str) -> docker.DockerClient:
    """A client for one engine, checked with a ping.

    Args:
        endpoint: "" for the local engine, or ``ssh://user@host[:port]``.
        key: the settings key that named it, for the error message.

    Raises:
        DockerError: the engine is unreachable, or SSH refused us (auth, unknown host key).
    """
    shown = f"{key}={endpoint}" if endpoint else f"{key}= (the local engine)"
    try:
        if endpoint:
            client = docker.DockerClient(base_url=endpoint, use_ssh_client=False,
                                         timeout=API_TIMEOUT_S)
        else:
            client = docker.from_env(timeout=API_TIMEOUT_S)
        client.ping()
    except paramiko.AuthenticationException:
        raise DockerError(f"{shown}: SSH authentication failed for {_user_host(endpoint)}; "
                          "add your public key to its ~/.ssh/authorized_keys, or name an "
                          "IdentityFile for it in ~/.ssh/config") from None
    except paramiko.SSHException as exc:
        if "known_hosts" in str(exc):
            raise DockerError(f"{shown}: the SSH host key of {_user_host(endpoint)} is not in "
                              "~/.ssh/known_hosts; connect once with ssh to trust it") from None
        raise DockerError(f"{shown}: SSH failed: {first_line(exc)}") from None
    except (DockerException, OSError) as exc:
        hint = ("is dockerd running there, and may this user run `docker`?" if endpoint
                else "is dockerd running? (DOCKER_HOST or /var/run/docker.sock)")
        raise DockerError(f"{shown}: Docker engine unreachable ({_why(exc)}); {hint}") from None
    return client


def _user_host(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.username or ''}{'@' if parts.username else ''}{parts.netloc.split('@')[-1]}"


_CAUSES = (("Connection refused", "connection refused"),
           ("NewConnectionError", "connection refused"), ("No such file", "no socket there"),
           ("Permission denied", "permission denied"), ("timed out", "timed out"))


def _why(exc: BaseException) -> str:
    """The cause of a connection failure in a few words (the SDK nests several errors)."""
    text = str(exc)
    return next((short for marker, short in _CAUSES if marker in text), first_line(exc, 120))


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class DockerRuntime:
    """Start, watch and stop server containers, one SDK client per engine (made lazily)."""

    name: RuntimeName = "docker"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log_dir = Path(settings.run_dir) / "logs"

    # --- the Runtime protocol -------------------------------------------------------------------

    def describe(self, spec: Command) -> str:
        """The equivalent ``docker run -d ...`` command (``--dry-run``), HF_TOKEN masked."""
        return docker_run_command(container_spec(self.settings, _server(spec)))

    def start(self, spec: Command, run_id: str) -> None:
        """Create and start the container of ``spec``, replacing an old one of ours.

        Raises:
            DockerError: a foreign container has the name, the image is missing, the engine has
                no GPU runtime, the port is in use, or the engine refused otherwise.
            ServerError: ``spec`` is not a server.
        """
        spec = _server(spec)
        cspec = container_spec(self.settings, spec, run_id)
        client = self.client(spec.docker_host, endpoint_key(spec.role))
        self._remove_ours(client, spec, run_id)
        try:
            container = client.containers.create(**run_kwargs(cspec))
        except ImageNotFound:
            raise DockerError(f"SGLANG_IMAGE={cspec.image}: image not found on "
                              f"{where(spec.docker_host)}; rerun with --pull to pull it "
                              "(with progress), or load it there") from None
        except APIError as exc:
            raise DockerError(f"{spec.name}: {where(spec.docker_host)} refused to create the "
                              f"container: {first_line(exc)}") from None
        try:
            container.start()
        except APIError as exc:
            # A failed start leaves the container in Created state; the next run would then
            # meet a name conflict, so nothing of this attempt may stay behind.
            container.remove(force=True)
            raise self._start_error(spec, exc) from None

    def exit_code(self, spec: Command) -> int | None:
        """None while it runs; its exit code once stopped (not found: ``UNKNOWN_EXIT``)."""
        container = self._find(spec)
        if container is None:
            return UNKNOWN_EXIT
        state: dict[str, Any] = container.attrs.get("State", {})
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        return int(state.get("ExitCode", UNKNOWN_EXIT))

    def log_tail(self, spec: Command, lines: int = 40) -> str:
        """The last ``lines`` lines of its output (the saved log once it was removed)."""
        container = self._find(spec)
        if container is None:
            saved = self._saved_log(spec.name)
            text = saved.read_text(errors="replace") if saved.is_file() else ""
            return "\n".join(text.splitlines()[-lines:])
        raw: bytes = container.logs(tail=lines)
        return raw.decode(errors="replace").rstrip("\n")

    def log_lines(self, spec: Command, follow: bool = False) -> Iterator[str]:
        """Its output line by line; with ``follow``, until it stops or the caller stops."""
        container = self._find(spec)
        if container is None:
            saved = self._saved_log(spec.name)
            if saved.is_file():
                with saved.open(errors="replace") as log:
                    yield from (line.rstrip("\n") for line in log)
            return
        yield from split_lines(container.logs(stream=True, follow=follow))

    def stop(self, spec: Command) -> bool:
        """Stop and remove our container of ``spec`` (its log saved under RUN_DIR/logs).

        Returns:
            True if it was running.
        """
        container = self._find(spec)
        return self._stop_and_remove(container) if container is not None else False

    def instances(self) -> list[Instance]:
        """Our containers (running or not) on every engine a docker role uses."""
        found: dict[str, Instance] = {}
        for endpoint, key in self.endpoints().items():
            client = self.client(endpoint, key)
            for container in client.containers.list(all=True, filters=_OURS):
                # Two endpoints may reach one engine (socket and ssh://): list a container once.
                found.setdefault(container.id, _instance(container, endpoint))
        return list(found.values())

    def stop_run(self, run_id: str | None) -> list[Instance]:
        """Stop and remove our containers of run ``run_id`` (None: every one of ours) on every
        engine a docker role uses, including ones of earlier settings (a NUM_DECODE that was
        larger then).
        """
        labels = [_OURS["label"]] + ([f"{LABEL_RUN_ID}={run_id}"] if run_id is not None else [])
        found = []
        for endpoint, key in self.endpoints().items():
            client = self.client(endpoint, key)
            for container in client.containers.list(all=True, filters={"label": labels}):
                found.append(_instance(container, endpoint))
                self._stop_and_remove(container)
        return found

    # --- beyond the protocol --------------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        """Engine endpoint -> the key that names it, for every role whose runtime is docker."""
        return engines(self.settings)

    def client(self, endpoint: str, key: str) -> docker.DockerClient:
        """The client of one engine, made on first use and kept; see ``connect``."""
        if endpoint not in _CLIENTS:
            _CLIENTS[endpoint] = connect(endpoint, key)
        return _CLIENTS[endpoint]

    # --- helpers --------------------------------------------------------------------------------

    def _find(self, spec: Command) -> Container | None:
        """Our container named like ``spec`` on its engine (None: none, or not ours)."""
        client = self.client(spec.docker_host, endpoint_key(spec.role))
        try:
            container: Container = client.containers.get(spec.name)
        except NotFound:
            return None
        return container if is_ours(container.labels) else None

    def _remove_ours(self, client: docker.DockerClient, spec: ServerSpec, run_id: str) -> None:
        """Remove an old container of ours named like ``spec``: this run's own, or a stopped one
        of another run; refuse to touch a foreign one or one another run still runs."""
        try:
            old: Container = client.containers.get(spec.name)
        except NotFound:
            return
        if not is_ours(old.labels):
            raise DockerError(
                f"{spec.name}: a container with this name on {where(spec.docker_host)} was not "
                f"started by sglbench, so it is left alone; if it is from the old scripts, "
                f"remove it yourself (docker rm -f {spec.name})"
            )
        owner = old.labels.get(LABEL_RUN_ID, "")
        if owner != run_id and old.attrs.get("State", {}).get("Running"):
            raise DockerError(f"{spec.name} of run {owner} still runs on "
                              f"{where(spec.docker_host)}; stop it with `invoke down --run "
                              f"{owner}` first")
        self._stop_and_remove(old)

    def _stop_and_remove(self, container: Container) -> bool:
        container.reload()
        running = bool(container.attrs.get("State", {}).get("Running"))
        if running:
            container.stop(timeout=STOP_TIMEOUT_S)
        self._save_log(container)
        # Removed by someone else meanwhile: the goal is reached.
        with contextlib.suppress(NotFound):
            container.remove(force=True)
        return running

    def _saved_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _save_log(self, container: Container) -> None:
        """Keep its output after removal, where the process runtime keeps logs too."""
        name = container.labels.get(LABEL_NAME) or container.name
        path = self._saved_log(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(container.logs())

    def _start_error(self, spec: ServerSpec, exc: APIError) -> DockerError:
        text = str(exc.explanation or exc)
        at = where(spec.docker_host)
        if _GPU_MISSING in text:
            return DockerError(
                f"DOCKER_GPUS=true ({spec.role.upper()}_GPUS={spec.gpus}): {at} has no NVIDIA "
                f"runtime (could not select device driver \"\" with capabilities: [[gpu]]); "
                "install the NVIDIA container toolkit there, or set DOCKER_GPUS=false"
            )
        if any(marker in text for marker in _PORT_IN_USE):
            key = f"{spec.role.upper()}_PORT"
            return DockerError(f"{key}={spec.port}: port already in use on {at}; stop what "
                               f"listens there or choose another {key}")
        if "unable to apply caps" in text:
            return DockerError(f"DOCKER_PRIVILEGED=true: {at} cannot grant a --privileged "
                               f"container every capability ({spec.name}); set "
                               "DOCKER_PRIVILEGED=false")
        if "/dev/infiniband" in text or "error setting rlimits" in text:
            return DockerError(f"IB_DEVICE={self.settings.ib_device}: {at} cannot give "
                               f"{spec.name} RDMA (/dev/infiniband and an unlimited memlock "
                               "ulimit); set IB_DEVICE= (empty) to run without RDMA")
        return DockerError(f"{spec.name}: {at} could not start the container: "
                           f"{first_line(exc)}")


def image_versions(settings: Settings) -> dict[str, str]:
    """SGLANG_IMAGE and, on each engine a docker role uses, the image's id and registry digest.

    For a run's metadata: ``image``, then ``image_id@<engine>`` and ``image_digest@<engine>``
    (engine: ``local`` or its endpoint). Never raises, so a run is never stopped by it: an
    engine that does not answer gives ``unavailable (why)``, a missing image ``not found``, and
    an image built on that engine ``none (not from a registry)`` as its digest.
    """
    image = settings.sglang_image
    found = {"image": image}
    runtime = DockerRuntime(settings)
    for endpoint, key in runtime.endpoints().items():
        engine = endpoint or "local"
        found[f"image_id@{engine}"], found[f"image_digest@{engine}"] = _image_on(
            runtime, endpoint, key, image)
    return found


def _image_on(runtime: DockerRuntime, endpoint: str, key: str, image: str) -> tuple[str, str]:
    """(id, registry digest) of ``image`` on one engine, or why they are not known."""
    try:
        attrs: dict[str, Any] = runtime.client(endpoint, key).images.get(image).attrs
    except ImageNotFound:
        return "not found", "not found"
    except (DockerError, DockerException, OSError, paramiko.SSHException) as exc:
        why = str(exc).split(";")[0] if isinstance(exc, DockerError) else _why(exc)
        return f"unavailable ({why})", f"unavailable ({why})"
    digests = [str(d) for d in attrs.get("RepoDigests") or []]
    return str(attrs.get("Id", "?")), registry_digest(image, digests)


def registry_digest(image: str, repo_digests: list[str]) -> str:
    """The ``repo@sha256:...`` of ``image`` among an image's RepoDigests.

    The one of the image's own repository first; ``none (not from a registry)`` for an image
    built or loaded on the engine itself.
    """
    repo = image.split("@")[0]  # RepoDigests name the repository without tag or digest
    repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
    return next((d for d in repo_digests if d.split("@")[0] == repo),
                repo_digests[0] if repo_digests else "none (not from a registry)")


def close_clients() -> None:
    """Close every engine client of this process (SSH connections included)."""
    for client in _CLIENTS.values():
        client.close()
    _CLIENTS.clear()


def _instance(container: Container, endpoint: str) -> Instance:
    labels = container.labels
    state: dict[str, Any] = container.attrs.get("State", {})
    running = bool(state.get("Running")) or state.get("Status") in ("created", "restarting")
    code = state.get("ExitCode")
    return Instance(
        name=labels.get(LABEL_NAME) or container.name or "?",
        role=labels.get(LABEL_ROLE, "?"),
        runtime="docker",
        where=f"{container.short_id}@{where(endpoint)}",
        url=labels.get(LABEL_URL, ""),
        state="running" if running else "exited",
        exit_code=None if running else (int(code) if isinstance(code, int) else UNKNOWN_EXIT),
        run_id=labels.get(LABEL_RUN_ID, ""),
    )


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Whole lines from a stream of byte chunks (a chunk may end mid-line)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")
