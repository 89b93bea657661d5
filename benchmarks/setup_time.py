"""How long does a fresh clone's ``make setup`` (and ``make demo``) take, cold and warm?

For each installer (``USE_UV=1``: uv, ``USE_UV=0``: pip) this clones the repository into a
scratch directory and times ``make setup`` into a new venv there:

* cold: empty caches (``UV_CACHE_DIR`` and ``PIP_CACHE_DIR`` point into the scratch directory),
  as on a machine that never installed the set. Wheels on this machine's local disk (its pip
  config's find-links and file:// indexes) may still be in the OS page cache.
* warm: a second fresh clone and venv with the caches the cold run filled, as for a second
  checkout on the same machine.
* again: ``make setup`` once more in the warm clone: must do nothing (the stamp is newer than
  every requirements file).

With ``--demo`` the cold clone also runs ``make demo`` (on free loopback ports), so cold setup
plus demo is a new user's first ``make demo``. Printed per run: wall seconds, the load average
before it (the machine is shared), and how many lines ``make`` printed, with the count of
warning or error lines among them. The scratch directory (venvs of ~6.7 GB each) is removed at
the end.

Measured 2026-12-01 on this machine (2 cores shared with other sessions; uv 0.13.8; torch and
the CUDA libraries from the local file:// index of this machine's pip config, the rest from
PyPI). Before (three pip steps, with resolution and bytecode): 316 s at load 2 to 3.5, 209 lines
(155 pip warnings about the local indexes, 47 "sglang 0.5.23 requires X" complaints, 1 ERROR).
Now (load average before each run in brackets):

=========  ============  ============  =====  ===================================================
installer  cold          warm          again  output
=========  ============  ============  =====  ===================================================
uv         44 s (2.0)    13 s (3.0)    0 s    2 lines: what is installed with what, the time
pip        179 s (1.3)   228 s (4.5)   0 s    the same 2 + 155 warnings of this machine's pip
                                              config (pip caches no PyPI download here)
=========  ============  ============  =====  ===================================================

uv, cold: about 37 s of it unpacks 6.3 GB of wheels into uv's cache (once per machine); the venv
then hard-links them (warm: about 2.5 s, and no second 6.7 GB on disk); installing uv itself
takes about 5 s. Compiling bytecode at install time (uv --compile-bytecode) took 138 s instead
of 6 s (load 5); left to Python, the first ``make demo`` spends about 4 CPU-s more than the
second. The CUDA libraries cannot be left out: torch 2.14.1's libtorch_cuda.so links cuDNN,
cuBLAS, NCCL and the rest (``import torch`` fails: libcudnn.so.9), and sglang imports torchvision
itself (the local CPU torch 2.13 without torchvision fails too).

Fresh clone ``make demo``, cold uv cache: 44 s setup + 103 s demo = 147 s (load 2 to 5; an
earlier run 46 + 94 = 140 s), goal 150 s; a new user's first demo also builds the offline
tokenizer once (about 4 s). Warm cache: 13 s + the demo.

Usage: ``python3 benchmarks/setup_time.py [--installer uv pip] [--rev HEAD] [--demo]``
(needs no venv: standard library only; about 7 GB of free disk per installer).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USE_UV = {"uv": "1", "pip": "0"}
# The demo's ports (examples/demo.env), moved to free ones so that no other run is disturbed.
DEMO_PORT_KEYS = ["AGG_PORT", "DECODE_PORT", "BOOTSTRAP_PORT", "ROUTER_PORT",
                  "ROUTER_PROMETHEUS_PORT"]  # fmt: skip
NOISE = ("warning", "error", "requires")


@dataclass
class Run:
    """One timed ``make`` call."""

    label: str
    seconds: float
    load: float
    lines: list[str]
    returncode: int

    @property
    def noisy(self) -> int:
        """Lines that a new user would read as a problem."""
        return sum(any(word in line.lower() for word in NOISE) for line in self.lines)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 a moment ago."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def clone(rev: str, where: Path) -> Path:
    """A fresh clone of this repository at ``rev`` (committed files only, as a user gets them)."""
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(where)], check=True)
    subprocess.run(["git", "checkout", "--quiet", rev], cwd=where, check=True)
    return where


def make(label: str, target: str, checkout: Path, env: dict[str, str], *args: str) -> Run:
    """Runs ``make target args`` in ``checkout`` and times it."""
    load = os.getloadavg()[0]
    start = time.monotonic()
    done = subprocess.run(["make", target, *args], cwd=checkout, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    seconds = time.monotonic() - start
    lines = done.stdout.splitlines()
    return Run(label, seconds, load, lines, done.returncode)


def demo_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the demo on free loopback ports and no hub access."""
    ports = dict(zip(DEMO_PORT_KEYS, map(str, free_ports(len(DEMO_PORT_KEYS))), strict=True))
    return {**env, **ports, "PREFILL_PORT": ports["AGG_PORT"], "HF_HUB_OFFLINE": "1"}


def time_installer(installer: str, rev: str, scratch: Path, demo: bool) -> list[Run]:
    """Cold, warm and repeated ``make setup`` (and optionally ``make demo``) with one installer."""
    base = scratch / installer
    env = {**os.environ, "UV_CACHE_DIR": str(base / "uv-cache"),
           "PIP_CACHE_DIR": str(base / "pip-cache")}  # fmt: skip
    use_uv = f"USE_UV={USE_UV[installer]}"
    runs: list[Run] = []
    cold = clone(rev, base / "cold")
    runs.append(make(f"{installer} cold", "setup", cold, env, "VENV=venv", use_uv))
    if demo and runs[-1].returncode == 0:
        runs.append(make(f"{installer} demo", "demo", cold, demo_env(env), "VENV=venv", use_uv))
    shutil.rmtree(cold / "venv")  # the disk: a pip venv is 6.7 GB
    warm = clone(rev, base / "warm")
    runs.append(make(f"{installer} warm", "setup", warm, env, "VENV=venv", use_uv))
    runs.append(make(f"{installer} again", "setup", warm, env, "VENV=venv", use_uv))
    shutil.rmtree(base)
    return runs


def report(runs: list[Run]) -> None:
    """The table, then the output of each run that failed or printed noise."""
    print(f"{'run':<12} {'wall s':>8} {'load':>5} {'lines':>6} {'noisy':>6}  rc")
    for run in runs:
        print(f"{run.label:<12} {run.seconds:8.1f} {run.load:5.1f} {len(run.lines):6d} "
              f"{run.noisy:6d}  {run.returncode}")  # fmt: skip
    for run in runs:
        if run.label.endswith("again"):
            idle = run.lines == ["make: Nothing to be done for 'setup'."]
            print(f"{run.label}: {'did nothing' if idle else 'DID SOMETHING'} (idempotent: {idle})")
    for run in runs:
        if not run.label.endswith("again") or run.returncode:
            print(f"\n--- {run.label}: first lines of its output")
            print("\n".join(run.lines[:8]))


def main() -> int:
    """Parses the flags, times each installer, prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installer", nargs="+", choices=sorted(USE_UV), default=["uv", "pip"])
    parser.add_argument("--rev", default="HEAD", help="commit of this repository to time")
    parser.add_argument("--demo", action="store_true", help="also time make demo (cold clone)")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="directory for clones, venvs and caches (default: a new temp dir)",
    )
    args = parser.parse_args()
    if shutil.which("make") is None or shutil.which("git") is None:
        print("error: needs make and git on PATH", file=sys.stderr)
        return 2
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="setup-time-", dir=args.scratch) as scratch:
        for installer in args.installer:
            runs += time_installer(installer, args.rev, Path(scratch), args.demo)
    report(runs)
    return 1 if any(run.returncode for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
