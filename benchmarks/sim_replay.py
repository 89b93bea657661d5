"""The simulator over HTTP, driven by SGLang's real bench client (sim_calibration.py --http).

* :class:`HttpStack` starts the real HTTP simulator (``python -m sglbench.sim``), plus the real
  ``sglang_router`` mini-lb for PD, as subprocesses; :func:`simulate_http` runs one workload with
  the real bench client against it.
* :func:`server_view` reads a server's ``--sim-trace``: what the model intended for the arrivals
  it saw, when it wrote, and (aggregated) :func:`replay_arrivals`, a virtual-clock replay of those
  very arrivals through the engine: if it matches the HTTP run, the server delivered exactly what
  the model intended, and whatever differs from the in-package replay
  (:mod:`sglbench.sim.replay`) comes from when the client sent its requests.

The in-process, virtual-clock replay of a whole point lives in the package:
:func:`sglbench.sim.replay.replay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from sglbench.sim.engine import Engine, EngineConfig, GenRequest
from sglbench.sim.points import METRICS, Point
from sglbench.sim.profiles import Profile
from sglbench.sim.vclock import run_virtual


async def _replay_arrivals(records: list[dict[str, Any]], profile: Profile) -> dict[str, float]:
    engine = Engine(EngineConfig(role="null", profile=profile, mem_fraction_static=0.9))
    await engine.start()
    loop = asyncio.get_running_loop()
    t0, a0 = loop.time(), records[0]["arrival"]
    ttfts: list[float] = []
    itls: list[float] = []

    async def one(r: dict[str, Any]) -> int:
        await asyncio.sleep(r["arrival"] - a0 - (loop.time() - t0))
        start = loop.time()
        req = GenRequest(r["rid"], r["prompt_tokens"], r["max_new_tokens"])
        events = await engine.generate(req).collect()
        if events:
            ttfts.append(events[0].deadline - start)
            itls.extend(b.deadline - a.deadline for a, b in itertools.pairwise(events))
        return int(r["max_new_tokens"])

    tokens = sum(await asyncio.gather(*(one(r) for r in records)))
    duration = loop.time() - t0
    await engine.stop()
    return {
        "output_throughput": tokens / duration,
        "mean_ttft_ms": 1e3 * statistics.fmean(ttfts),
        "mean_itl_ms": 1e3 * statistics.fmean(itls) if itls else 0.0,
    }


def replay_arrivals(records: list[dict[str, Any]], profile: Profile) -> dict[str, float]:
    """Replay an aggregated server's trace records (arrival, lengths) on virtual time.

    Returns the engine-side output throughput, mean TTFT and mean ITL for those arrivals.
    """
    ordered = sorted(records, key=lambda r: float(r["arrival"]))
    return run_virtual(_replay_arrivals(ordered, profile))


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

    def cpu_seconds(self) -> float:
        """CPU time used so far by the simulators (and the router) of this stack."""
        return sum(_cpu_seconds(proc.pid) for proc in self.procs)

    def trace(self, name: str) -> Path:
        """The ``--sim-trace`` file of simulator ``name`` (agg, prefill, decode)."""
        return self.logs / f"{name}.trace.jsonl"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def _sim(self, name: str, role: str, fraction: float, *extra: str) -> int:
        port = _free_port()
        argv = [sys.executable, "-m", "sglbench.sim", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--sim-profile", self.profile_name, "--mem-fraction-static", str(fraction)]
        argv += ["--sim-trace", str(self.trace(name))]
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_view(trace: Path, offset: int, profile: Profile) -> tuple[str, int]:
    """Means over the trace records written since ``offset``: where the streaming time went.

    ``model`` is the engine's intended TTFT (first deadline - arrival at the server), ``write``
    when the server wrote the first chunk (its lateness is this machine's CPU), ``lag`` the
    median write lateness of all chunks. The client's TTFT minus ``write`` is the bench client's
    own time (connection, request, parsing) plus the network.
    """
    with trace.open("rb") as f:
        f.seek(offset)
        records = [json.loads(line) for line in f.read().splitlines()]
        end = f.tell()
    streamed = [r for r in records if r["sent"]]
    if not streamed:
        return "no streamed records", end
    model = statistics.fmean(r["deadlines"][0] - r["arrival"] for r in streamed)
    write = statistics.fmean(r["sent"][0] - r["arrival"] for r in streamed)
    lags = [s - d for r in streamed for s, d in zip(r["sent"], r["deadlines"], strict=True)]
    merged = sum(r.get("coalesced", 0) for r in streamed)
    text = (
        f"server TTFT model {model * 1e3:.1f} ms, first write {write * 1e3:.1f} ms;"
        f" write lag median {statistics.median(lags) * 1e3:.2f} ms; merged tokens {merged}"
    )
    if streamed[0]["role"] == "null" and len(streamed) > 1:
        warmup = min(streamed, key=lambda r: float(r["arrival"]))
        rep = replay_arrivals([r for r in streamed if r is not warmup], profile)
        text += (
            f"; replay {rep['output_throughput']:.0f} tok/s, TTFT {rep['mean_ttft_ms']:.1f} ms,"
            f" ITL {rep['mean_itl_ms']:.2f} ms"
        )
    return text, end


def simulate_http(p: Point, port: int, tokenizer: Path, logs: Path) -> dict[str, float]:
    """Replay one point with SGLang's real bench client against ``port`` on loopback."""
    w = p.workload
    out = logs / f"{p.tag}.jsonl"
    out.unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "sglang.benchmark.serving", "--backend", "sglang",
        "--host", "127.0.0.1", "--port", str(port), "--dataset-name", "random-ids",
        "--tokenizer", str(tokenizer), "--num-prompts", str(w.num_prompts),
        "--random-input-len", str(w.input_len), "--random-output-len", str(w.output_len),
        "--random-range-ratio", str(w.range_ratio), "--max-concurrency", str(w.max_concurrency),
        "--request-rate", str(w.request_rate), "--seed", str(w.seed), "--output-file", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with (logs / f"{p.tag}.client.log").open("wb") as log:
        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    row = json.loads(out.read_text().splitlines()[-1])
    return {k: float(row[k]) for k in (*METRICS, "total_output_tokens")}


def replay_http(points: list[Point], profile: Profile, profile_ref: str) -> list[dict[str, float]]:
    """Replay agg and pd_intra points over HTTP; one simulator stack per family."""
    from sglbench.sim.tokenizer import ensure_offline_tokenizer

    tokenizer = ensure_offline_tokenizer()
    logs = Path(tempfile.mkdtemp(prefix="sim-calibration-"))
    print(f"logs and client rows: {logs}", file=sys.stderr)
    results: dict[str, dict[str, float]] = {}
    for mode in ("agg", "pd_intra"):
        todo = [p for p in points if p.family == mode]
        if not todo:
            continue
        with HttpStack(mode, profile_ref, logs) as stack:
            trace, offset = stack.trace("agg" if mode == "agg" else "decode"), 0
            for p in todo:
                cpu = stack.cpu_seconds()
                results[p.tag] = sim = simulate_http(p, stack.port, tokenizer, logs)
                cpu = stack.cpu_seconds() - cpu
                view, offset = server_view(trace, offset, profile)
                print(
                    f"  {p.tag}: client TTFT {sim['mean_ttft_ms']:.1f} ms; {view}; servers' CPU"
                    f" {cpu / sim['total_output_tokens'] * 1e6:.0f} us per output token",
                    file=sys.stderr,
                    flush=True,
                )
    return [results[p.tag] for p in points if p.tag in results]
