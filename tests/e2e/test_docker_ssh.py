"""A role on a remote engine (``ssh://root@127.0.0.1:PORT``) through the SDK's own SSH support.

A real ``sshd`` on a loopback port with generated keys stands in for the second node; behind it
is the same engine, reached the way a remote one is (``docker system dial-stdio`` over SSH).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from docker_e2e import free_port, ours, quiet_console, settings_of

from sglbench.errors import DockerError
from sglbench.execute import deploy
from sglbench.execute.docker import DockerRuntime

pytestmark = pytest.mark.e2e
SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class Sshd:
    """A running sshd: its port, its host key line, its log."""

    port: int
    host_key: str  # "ssh-ed25519 AAAA..."
    log: Path

    @property
    def endpoint(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _home(tmp: Path, sshd: Sshd, *, authorized: bool, trusted: bool) -> Path:
    """A HOME with ~/.ssh as a user would set it up: a key, and the host key once trusted."""
    home = tmp / f"home-{authorized}-{trusted}"
    (home / ".ssh").mkdir(parents=True)
    key = _keygen(home / ".ssh" / "id_ed25519")
    if authorized:
        with (tmp / "authorized_keys").open("a") as out:
            out.write(key + "\n")
    if trusted:
        (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n")
    return home


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """sshd on a free loopback port, key authentication only; stopped after the test."""
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (CI installs it, see .ci/run)")
    if os.geteuid() != 0:
        pytest.skip("sshd for another login needs root (CI runs as root)")
    host_key = _keygen(tmp_path / "host_key")
    (tmp_path / "authorized_keys").touch(mode=0o600)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        f"StrictModes no\nPidFile {tmp_path / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    log = tmp_path / "sshd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, log)
        yield Sshd(port, host_key, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"sshd exited: {log.read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"sshd did not listen on {port}: {log.read_text()}")


def _as_user(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only the key in HOME may be offered


def test_prefill_on_a_remote_engine_over_ssh(
    clean_engine: docker.DockerClient, e2e_env: dict[str, str], sshd: Sshd, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _as_user(monkeypatch, _home(tmp_path, sshd, authorized=True, trusted=True))
    # SIMULATE=true: the command is `python3 -m sglbench.sim` (the other e2e tests run the
    # sglang.launch_server command); both are in the test image.
    settings = settings_of(e2e_env, PREFILL_DOCKER_HOST=sshd.endpoint, SIMULATE="true",
                           RUNTIME="process", PREFILL_RUNTIME="docker")
    console = quiet_console()
    try:
        [spec] = deploy.up_role(settings, "prefill", run_id="remote1", console=console)
        [instance] = DockerRuntime(settings).instances()
        assert instance.where.endswith(f"@{sshd.endpoint}") and instance.state == "running"
        assert instance.run_id == "remote1" and instance.url == spec.url
        [container] = ours(clean_engine)
        assert container.attrs["Config"]["Cmd"][:3] == ["python3", "-m", "sglbench.sim"]
        assert "ready" in DockerRuntime(settings).log_tail(spec)
        assert "Accepted publickey for root" in sshd.log.read_text()
    finally:
        deploy.down(settings, console)
    assert ours(clean_engine) == []


def test_ssh_auth_failure_is_one_clear_line(
    e2e_env: dict[str, str], sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_user(monkeypatch, _home(tmp_path, sshd, authorized=False, trusted=True))
    settings = settings_of(e2e_env, DECODE_DOCKER_HOST=sshd.endpoint)
    with pytest.raises(DockerError, match=r"DECODE_DOCKER_HOST=.*SSH authentication failed for "
                                          rf"root@127\.0\.0\.1:{sshd.port}"):
        DockerRuntime(settings).instances()


def test_unknown_ssh_host_key_is_not_trusted_silently(
    e2e_env: dict[str, str], sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_user(monkeypatch, _home(tmp_path, sshd, authorized=True, trusted=False))
    settings = settings_of(e2e_env, AGG_DOCKER_HOST=sshd.endpoint)
    with pytest.raises(DockerError, match=r"AGG_DOCKER_HOST=.*not in ~/\.ssh/known_hosts"):
        DockerRuntime(settings).instances()


def test_unreachable_ssh_endpoint(
    e2e_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    endpoint = f"ssh://root@127.0.0.1:{free_port()}"
    settings = settings_of(e2e_env, PREFILL_DOCKER_HOST=endpoint)
    with pytest.raises(DockerError, match=r"PREFILL_DOCKER_HOST=.*unreachable"):
        DockerRuntime(settings).instances()
