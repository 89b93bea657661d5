"""Build the e2e test image without any registry: a rootfs from this host's Python, imported.

The image holds this interpreter (its binary, stdlib and the shared libraries ``ldd`` lists), the
site-packages the simulator imports (found by importing it in a subprocess, so it follows the
simulator's code), the ``sglbench`` package, the offline tokenizer already built (so a container
starts in about a second), and a test-only ``sglang`` package whose ``launch_server`` runs the
simulator with the same argv. So ``python3 -m sglang.launch_server ...`` (what a real run starts)
works in this image; only the image differs from a real run.

The tag carries a hash of every input (paths, sizes, mtimes), so a rerun with nothing changed
reuses the image in the engine and costs only the hashing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

REPOSITORY = "sglbench-test-sim"
SITE = "/opt/sglbench-test/site-packages"
_STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
                "lib2to3", "__phello__"}
_LIB_RE = re.compile(r"(/\S+) \(0x[0-9a-f]+\)")

# Runs in a subprocess of this interpreter: import every simulator module, load the tokenizer
# the way a server does, and report what came from site-packages.
_PROBE = r"""
import importlib, json, pkgutil, sys, sysconfig
import sglbench.sim as sim
for mod in pkgutil.walk_packages(sim.__path__, "sglbench.sim."):
    if not mod.name.endswith("__main__"):
        importlib.import_module(mod.name)
from sglbench.sim.config import DEFAULT_MODEL
from sglbench.sim.tokenizer import ensure_offline_tokenizer, load_tokenizer
tokenizer_dir = ensure_offline_tokenizer()
load_tokenizer(DEFAULT_MODEL, None)
site = sysconfig.get_paths()["purelib"]
tops = sorted({name.split(".")[0] for name, m in list(sys.modules.items())
               if (getattr(m, "__file__", None) or "").startswith(site)})
print(json.dumps({"site": site, "tops": tops, "tokenizer": str(tokenizer_dir)}))
"""

# The test double: only inside this image, never on a user's path.
_SGLANG_INIT = '''"""TEST DOUBLE of SGLang, only inside sglbench's e2e test image (never for users).

``python3 -m sglang.launch_server ARGS`` runs sglbench's simulator with the same ARGS, so the
e2e tests start containers with exactly the command a real run uses.
"""
'''
_SGLANG_LAUNCH = '''"""TEST DOUBLE of sglang.launch_server: python -m sglbench.sim, same argv."""

import runpy

runpy.run_module("sglbench.sim", run_name="__main__", alter_sys=True)
'''
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


@dataclass
class Rootfs:
    """Files of the image: host file -> path in the image, plus generated files."""

    files: dict[str, Path]
    generated: dict[str, bytes]
    symlinks: dict[str, str]

    def key(self) -> str:
        """Hash of every input; equal keys mean equal images."""
        digest = hashlib.sha256()
        for arc in sorted(self.files):
            stat = self.files[arc].stat()
            digest.update(f"{arc}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        for arc in sorted(self.generated):
            digest.update(arc.encode() + b"\0" + self.generated[arc])
        digest.update(json.dumps(sorted(self.symlinks.items())).encode())
        return digest.hexdigest()[:16]


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _add_tree(files: dict[str, Path], src: Path, dest: str) -> None:
    if src.is_file():
        files[dest] = src
        return
    for path in _walk(src):
        files[f"{dest}/{path.relative_to(src).as_posix()}"] = path


def _probe() -> dict[str, Any]:
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True,
                         text=True, env=env).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _distribution_entries(site: Path, tops: Iterable[str]) -> set[str]:
    """Top-level entries of site-packages (package dirs, modules, dist-info, .libs) to copy."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    entries: set[str] = set()
    for top in tops:
        for dist_name in owners.get(top, []):
            dist = metadata.distribution(dist_name)
            for file in dist.files or []:
                if file.parts and file.parts[0] != "..":
                    entries.add(file.parts[0])
        if not owners.get(top):
            entries.update(p.name for p in site.glob(f"{top}*") if p.stem.split(".")[0] == top)
    entries.discard("__pycache__")
    return entries


def _shared_libraries(binaries: list[Path], skip_under: Path) -> set[Path]:
    """Every library ``ldd`` resolves for ``binaries`` (outside ``skip_under``)."""
    out = subprocess.run(["ldd", *map(str, binaries)], capture_output=True, text=True).stdout
    libs = {Path(m.group(1)) for m in _LIB_RE.finditer(out)}
    libs = {lib for lib in libs if not lib.is_relative_to(skip_under)}
    # glibc dlopens libgcc_s when a thread exits; ldd does not list it.
    for lib in list(libs):
        if lib.name.startswith("libc.so") and (lib.parent / "libgcc_s.so.1").exists():
            libs.add(lib.parent / "libgcc_s.so.1")
    return libs


def collect_rootfs() -> Rootfs:
    """Everything the image needs, from this interpreter and the simulator's imports."""
    probe = _probe()
    site = Path(probe["site"])
    base = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = (base / "bin" / f"python{version}").resolve()
    stdlib = base / "lib" / f"python{version}"
    files: dict[str, Path] = {str(python): python}
    for entry in sorted(stdlib.iterdir()):
        if entry.name not in _STDLIB_SKIP and not entry.name.startswith("config-"):
            _add_tree(files, entry, str(entry))
    for entry in sorted(_distribution_entries(site, probe["tops"])):
        if (site / entry).exists():
            _add_tree(files, site / entry, f"{SITE}/{entry}")
    package = Path(__file__).resolve().parents[2] / "sglbench"
    _add_tree(files, package, f"{SITE}/sglbench")
    # Host path and the container's ~/.cache: TOKENIZER_PATH may name either.
    tokenizer = Path(probe["tokenizer"])
    for dest in {str(tokenizer), "/root/.cache/sglbench/qwen2.5-tokenizer"}:
        _add_tree(files, tokenizer, dest)
    files = {arc: src for arc, src in files.items() if "_tkinter" not in arc}
    binaries = [python, *(src for src in files.values() if src.name.endswith(".so")
                          or ".so." in src.name)]
    for lib in _shared_libraries(binaries, site):
        files.setdefault(str(lib), lib.resolve())
    generated = {
        f"{SITE}/sglang/__init__.py": _SGLANG_INIT.encode(),
        f"{SITE}/sglang/launch_server.py": _SGLANG_LAUNCH.encode(),
        "/etc/passwd": _PASSWD,
        "/etc/group": _GROUP,
    }
    symlinks = {"/usr/local/bin/python3": str(python), "/usr/local/bin/python": str(python)}
    return Rootfs(files, generated, symlinks)


def _dir_entries(paths: Iterable[str]) -> list[str]:
    dirs: set[str] = set()
    for path in paths:
        parent = Path(path).parent
        while str(parent) not in ("/", "."):
            dirs.add(str(parent))
            parent = parent.parent
    return sorted(dirs)


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.mode, info.size = kind, mode, size
    return info


def write_tar(rootfs: Rootfs, out: Path) -> None:
    """Write the rootfs as an uncompressed tarball (uncompressed: faster to write and import)."""
    everything = [*rootfs.files, *rootfs.generated, *rootfs.symlinks, "/root/x", "/tmp/x"]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory in _dir_entries(everything):
            mode = 0o1777 if directory == "/tmp" else 0o755
            tar.addfile(_info(directory, tarfile.DIRTYPE, mode))
        for arc, src in sorted(rootfs.files.items()):
            tar.add(src, arcname=arc.lstrip("/"), recursive=False)
        for arc, data in sorted(rootfs.generated.items()):
            with tempfile.TemporaryFile() as buf:
                buf.write(data)
                buf.seek(0)
                tar.addfile(_info(arc, tarfile.REGTYPE, 0o644, len(data)), buf)
        for arc, target in rootfs.symlinks.items():
            info = _info(arc, tarfile.SYMTYPE, 0o777)
            info.linkname = target
            tar.addfile(info)


def build_test_image(client: docker.DockerClient) -> str:
    """The test image's tag on ``client``'s engine, built and imported only if missing.

    Older tags of the test image are removed, so reruns do not pile up images.
    """
    rootfs = collect_rootfs()
    tag = f"{REPOSITORY}:{rootfs.key()}"
    existing = client.images.list(name=REPOSITORY)
    if any(tag in image.tags for image in existing):
        return tag
    with tempfile.TemporaryDirectory(prefix="sglbench-image-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        write_tar(rootfs, tarball)
        changes = [
            "ENV PATH=/usr/local/bin:/usr/bin:/bin",
            f"ENV PYTHONPATH={SITE}",
            "ENV HOME=/root",
            "ENV LANG=C.UTF-8",
            "WORKDIR /root",
        ]
        repo, version = tag.split(":")
        client.api.import_image_from_file(str(tarball), repository=repo, tag=version,
                                          changes=changes)
    for image in existing:
        for old in image.tags:
            if old != tag:
                client.images.remove(old, force=True)
    return tag
