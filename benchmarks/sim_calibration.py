"""Calibrate the simulator's timing model against real GH200 runs.

For each reference workload in ``reference-results`` (``agg_*`` and ``pd_intra_*``: n prompts,
input and output lengths uniform in [1, L], max concurrency c, request rate inf) this replays the
same workload against the simulator and prints measured vs simulated output throughput, mean TTFT
and mean ITL with the error of each, then the median absolute errors.

Two ways to replay:

* default: the real HTTP simulator (``python -m sglbench.sim``) driven by SGLang's real bench
  client (``python -m sglang.benchmark.serving --backend sglang --dataset-name random-ids``) with
  the offline tokenizer; PD goes through the real ``sglang_router`` mini-lb.
* ``--direct``: an in-process asyncio driver that talks to :class:`sglbench.sim.engine.Engine`
  directly, mimicking the client (c workers, the reference's own length draws), on a virtual
  clock (``--real-time`` to sleep for real): it measures the timing model alone, in seconds.

The HTTP mode measures the model plus everything real on this machine: the simulator's and the
client's CPU time (on 2 busy cores they add latency at c32), and the client's own length draws
(sglang 0.5.23 draws outputs from [1, L], the reference's 0.5.5 from [0, L]: totals differ ~1%).

Usage:
    python benchmarks/sim_calibration.py [--direct] [--only agg|pd_intra] [--profile NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sglbench.sim import timing
from sglbench.sim.engine import Engine, EngineConfig, GenRequest
from sglbench.sim.profiles import DEFAULT_PROFILE, Profile, load_profile

REFERENCE_DIR = Path("/work/shared/reference-results")
_NAME = re.compile(r"^(agg|pd_intra)_n(\d+)_in(\d+)_out(\d+)_c(\d+)\.jsonl$")
METRICS = ("output_throughput", "mean_ttft_ms", "mean_itl_ms")


@dataclass(frozen=True)
class Workload:
    """One reference run: its shape and the metrics it measured."""

    tag: str
    mode: str
    num_prompts: int
    input_len: int
    output_len: int
    concurrency: int
    measured: dict[str, float]


def load_workloads(directory: Path, only: str | None) -> list[Workload]:
    """Read the agg and pd_intra reference rows (Python's json accepts their bare Infinity)."""
    workloads = []
    for path in sorted(directory.glob("*.jsonl")):
        match = _NAME.match(path.name)
        if not match or (only and match.group(1) != only):
            continue
        row = json.loads(path.read_text().splitlines()[0])
        n, lin, lout, c = (int(g) for g in match.groups()[1:])
        measured = {k: float(row[k]) for k in METRICS}
        workloads.append(Workload(path.stem, match.group(1), n, lin, lout, c, measured))
    return workloads


def reference_lengths(w: Workload, seed: int = 1) -> list[tuple[int, int]]:
    """The (input, output) lengths the reference client (bench_serving 0.5.5, seed 1) drew.

    That client drew inputs from [1, L] and outputs from [0, L] (the input totals and output
    totals of the reference rows match these draws exactly).
    """
    rng = np.random.RandomState(seed)
    inputs = rng.randint(1, w.input_len + 1, size=w.num_prompts)
    outputs = rng.randint(0, w.output_len + 1, size=w.num_prompts)
    return [(int(i), int(o)) for i, o in zip(inputs, outputs, strict=True)]


@dataclass
class _Record:
    start: float
    ttft: float = 0.0
    itls: list[float] | None = None
    tokens: int = 0


class DirectReplay:
    """In-process replay: engines on this loop, a client that awaits token streams."""

    def __init__(self, profile: Profile, mode: str) -> None:
        self.profile = profile
        self.mode = mode
        if mode == "agg":
            config = EngineConfig(role="null", profile=profile, mem_fraction_static=0.9)
            self.engines = [Engine(config)]
        else:
            self.engines = [
                Engine(EngineConfig(role=role, profile=profile, mem_fraction_static=0.45))
                for role in ("prefill", "decode")
            ]

    async def _request(self, rid: str, prompt: int, out: int) -> _Record:
        loop = asyncio.get_running_loop()
        rec = _Record(start=loop.time(), itls=[])
        if self.mode == "agg":
            stream = self.engines[0].generate(GenRequest(rid, prompt, out))
        else:
            async for _ in self.engines[0].generate(GenRequest(rid, prompt, out)):
                pass
            await asyncio.sleep(timing.kv_transfer_time(self.profile, prompt))
            stream = self.engines[1].generate(GenRequest(rid, prompt, out, kv_ready=True))
        last = rec.start
        async for _ in stream:
            now = loop.time()
            if rec.tokens == 0:
                rec.ttft = now - rec.start
            else:
                assert rec.itls is not None
                rec.itls.append(now - last)
            last = now
            rec.tokens += 1
        return rec

    async def run(self, lengths: list[tuple[int, int]], concurrency: int) -> dict[str, float]:
        """Replay with ``concurrency`` workers; return the client-side metrics."""
        for engine in self.engines:
            await engine.start()
        sem = asyncio.Semaphore(concurrency)

        async def limited(i: int, prompt: int, out: int) -> _Record:
            async with sem:
                return await self._request(f"r{i}", prompt, out)

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        records = await asyncio.gather(*(limited(i, p, o) for i, (p, o) in enumerate(lengths)))
        duration = loop.time() - t0
        for engine in self.engines:
            await engine.stop()
        itls = [x for r in records for x in (r.itls or [])]
        return {
            "output_throughput": sum(r.tokens for r in records) / duration,
            "mean_ttft_ms": 1e3 * statistics.fmean(r.ttft for r in records),
            "mean_itl_ms": 1e3 * statistics.fmean(itls) if itls else 0.0,
        }


class _VirtualClockSelector(selectors.DefaultSelector):
    """A selector that, instead of waiting, advances a virtual clock by the timeout."""

    clock = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self.clock += timeout
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """Event loop on virtual time: sleeps cost nothing, so a replay measures the model alone.

    Only for in-process replays with no real I/O (the engines and the driver share the loop).
    """

    def __init__(self) -> None:
        self._virtual = _VirtualClockSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.clock


def simulate_direct(w: Workload, profile: Profile, virtual: bool = True) -> dict[str, float]:
    """Replay one workload in-process (on virtual time unless ``virtual`` is False)."""
    replay = DirectReplay(profile, w.mode).run(reference_lengths(w), w.concurrency)
    if not virtual:
        return asyncio.run(replay)
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(replay)
    finally:
        loop.close()


def _err(sim: float, ref: float) -> float:
    return 100.0 * (sim - ref) / ref if ref else float("nan")


def print_table(rows: list[tuple[Workload, dict[str, float]]]) -> None:
    """Print measured vs simulated metrics, their errors and the median absolute errors."""
    head = f"{'workload':34} " + " ".join(f"{m:>26}" for m in ("out tok/s", "TTFT ms", "ITL ms"))
    print(head)
    print(f"{'':34} " + " ".join(f"{'real':>8} {'sim':>8} {'err%':>8}" for _ in METRICS))
    errors: dict[str, dict[str, list[float]]] = {}
    for w, sim in rows:
        cells = []
        for m in METRICS:
            e = _err(sim[m], w.measured[m])
            errors.setdefault(w.mode, {}).setdefault(m, []).append(abs(e))
            cells.append(f"{w.measured[m]:8.1f} {sim[m]:8.1f} {e:+8.1f}")
        print(f"{w.tag:34} " + " ".join(cells))
    for mode, per_metric in errors.items():
        med = ", ".join(f"{m} {statistics.median(v):.1f}%" for m, v in per_metric.items())
        print(f"median |error| {mode}: {med}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, replay every workload, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--direct", action="store_true", help="replay in-process (fast)")
    parser.add_argument(
        "--real-time", action="store_true", help="with --direct: sleep for real, not virtual time"
    )
    parser.add_argument("--only", choices=("agg", "pd_intra"), help="one mode only")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="simulator profile")
    parser.add_argument("--references", type=Path, default=REFERENCE_DIR, help="reference dir")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    workloads = load_workloads(args.references, args.only)
    if not workloads:
        print(f"no agg_*/pd_intra_* reference files in {args.references}", file=sys.stderr)
        return 2
    if args.direct:
        sims = [simulate_direct(w, profile, virtual=not args.real_time) for w in workloads]
    else:
        sims = replay_http(workloads, args.profile)
    print_table(list(zip(workloads, sims, strict=True)))
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http_ok(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 120) -> None:
    """Poll ``url`` until it answers 200; fail early if a process we started exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} while starting")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


class HttpStack:
    """The simulator server(s), plus the mini-lb PD router for pd_intra, as subprocesses."""

    def __init__(self, mode: str, profile_name: str, logs: Path) -> None:
        self.mode, self.profile_name, self.logs = mode, profile_name, logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = 0

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def _sim(self, name: str, role: str, fraction: float, *extra: str) -> int:
        port = _free_port()
        argv = [sys.executable, "-m", "sglbench.sim", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--sim-profile", self.profile_name, "--mem-fraction-static", str(fraction)]
        self._spawn(name, [*argv, "--disaggregation-mode", role, *extra])
        _wait_http_ok(f"http://127.0.0.1:{port}/health_generate", self.procs)
        return port

    def __enter__(self) -> HttpStack:
        try:
            if self.mode == "agg":
                self.port = self._sim("agg", "null", 0.9)
                return self
            bootstrap = _free_port()
            boot = ["--disaggregation-bootstrap-port", str(bootstrap)]
            prefill = self._sim("prefill", "prefill", 0.45, *boot)
            decode = self._sim("decode", "decode", 0.45)
            self.port = _free_port()
            self._spawn("router", [
                sys.executable, "-m", "sglang_router.launch_router", "--pd-disaggregation",
                "--mini-lb", "--prefill", f"http://127.0.0.1:{prefill}", str(bootstrap),
                "--decode", f"http://127.0.0.1:{decode}",
                "--host", "127.0.0.1", "--port", str(self.port),
            ])  # fmt: skip
            _wait_http_ok(f"http://127.0.0.1:{self.port}/health", self.procs)
            return self
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def simulate_http(w: Workload, port: int, tokenizer: Path, logs: Path) -> dict[str, float]:
    """Replay one workload with SGLang's real bench client against ``port`` on loopback."""
    out = logs / f"{w.tag}.jsonl"
    out.unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "sglang.benchmark.serving", "--backend", "sglang",
        "--host", "127.0.0.1", "--port", str(port), "--dataset-name", "random-ids",
        "--tokenizer", str(tokenizer), "--num-prompts", str(w.num_prompts),
        "--random-input-len", str(w.input_len), "--random-output-len", str(w.output_len),
        "--random-range-ratio", "0.0", "--max-concurrency", str(w.concurrency),
        "--request-rate", "inf", "--seed", "1", "--output-file", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with (logs / f"{w.tag}.client.log").open("wb") as log:
        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    row = json.loads(out.read_text().splitlines()[-1])
    return {k: float(row[k]) for k in METRICS}


def replay_http(workloads: list[Workload], profile_name: str) -> list[dict[str, float]]:
    """Replay every workload over HTTP; one simulator stack per mode."""
    from sglbench.sim.tokenizer import ensure_offline_tokenizer

    tokenizer = ensure_offline_tokenizer()
    logs = Path(tempfile.mkdtemp(prefix="sim-calibration-"))
    print(f"logs and client rows: {logs}", file=sys.stderr)
    results: dict[str, dict[str, float]] = {}
    for mode in ("agg", "pd_intra"):
        todo = [w for w in workloads if w.mode == mode]
        if not todo:
            continue
        with HttpStack(mode, profile_name, logs) as stack:
            for w in todo:
                print(f"  {w.tag} ...", file=sys.stderr, flush=True)
                results[w.tag] = simulate_http(w, stack.port, tokenizer, logs)
    return [results[w.tag] for w in workloads]


if __name__ == "__main__":
    sys.exit(main())
