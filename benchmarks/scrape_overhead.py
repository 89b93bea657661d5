"""Does scraping /metrics disturb what it measures? The client's ITL with scraping on and off.

Starts one simulated agg server through the harness (``deploy.up_role``: the same launch args a
run uses, ``--enable-metrics`` included), one long-lived bench client worker (SGLang's real
client), and measures the same point (random-ids, 64 streams, rate inf) alternately with
BENCH_SERVER_METRICS on and off; the cache flush after the warm-up happens in both, so the
only difference is the "before"/"after" scrapes and the gauge sampler thread of the harness
process. Printed per round and condition: the client's median and mean ITL, and the CPU the
harness process and the server used during the point; at the end, the median over rounds of the
paired ratio on/off of the mean ITL, and the extra CPU scraping cost. Goal (issue 11): ITL
within 2%. On a loaded 2-core machine the round-to-round noise of ITL is larger than 2%, so the
CPU figures (load-independent) say how much scraping can disturb at most.

Measured 2026-12-01 on the 2 shared cores of the project machine, with other sessions' tests
running (load average 5.6-8.5), 128 prompts x 128 in / 256 out at 64 streams:

* interval 1 s, 10 rounds: mean-ITL ratio on/off per round 0.39-1.50, median 0.875; the
  gauge-sampler thread used 0.33% of a core during the points, the harness process in all
  +1.1% (the before/after scrapes and flushes fall outside the measured window); the server's
  CPU difference (+2.3%) is inside its round-to-round noise.
* interval 0.2 s (5x more samples), 6 rounds: ratio median 1.10 (0.92-1.40); sampler 1.35%.

So on this machine the 2% goal can be neither shown nor refuted: the round-to-round noise of
the client's ITL is +-30-50% whatever the scraping does. What scraping costs is bounded by its
CPU: about 3 ms of one core per sample and worker (fetch + parse of the filtered gauge lines),
0.3% of a core at the default 1 s. Building an HTTP client costs ~37 ms of CPU (its TLS
context), so the scrapes reuse clients built outside the measured window; before that fix the
sampler alone cost 5% of a core.

Usage: ``.venv/bin/python benchmarks/scrape_overhead.py [--rounds 3] [--interval 1.0]
[--prompts 128] [--output-len 256]``
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from rich.console import Console  # noqa: E402

from sglbench.execute import deploy  # noqa: E402
from sglbench.execute.bench import run_point, start_worker  # noqa: E402
from sglbench.execute.target import Target  # noqa: E402
from sglbench.plan.client import client_setup  # noqa: E402
from sglbench.plan.observe import worker_endpoints  # noqa: E402
from sglbench.plan.sweep import sweep_points  # noqa: E402
from sglbench.settings import Settings, load_settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(work: Path, args: argparse.Namespace) -> Settings:
    keys = {
        "SIMULATE": "true", "RUNTIME": "process", "IB_DEVICE": "", "AGG_HOST": "127.0.0.1",
        "SERVER_BIND_HOST": "127.0.0.1", "AGG_PORT": str(free_port()),
        "ROUTER_PROMETHEUS_PORT": str(free_port()), "ROUTER_PORT": str(free_port()),
        "BENCH_DATASET": "random-ids", "BENCH_NUM_PROMPTS": str(args.prompts),
        "BENCH_INPUT_LEN": "128", "BENCH_OUTPUT_LEN": str(args.output_len),
        "BENCH_RANGE_RATIO": "1", "BENCH_MAX_CONCURRENCY": "64",
        "BENCH_METRICS_INTERVAL_S": str(args.interval),
        "RESULTS_DIR": str(work / "results"), "RUN_DIR": str(work / "run"),
    }  # fmt: skip
    return load_settings(None, {}, keys).settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = make_settings(work, args)
        client = client_setup(base)
        point = sweep_points(base)[0]
        deploy.up_role(base, "agg", run_id="scrape-overhead", console=console)
        worker = start_worker(base, client, work / "logs" / "client-worker.log")
        found: dict[bool, list[tuple[float, ...]]] = {True: [], False: []}
        try:
            worker.wait_ready()
            server = psutil.Process(int(re.sub(r"\D", "", deploy.status(base)[0].where)))
            harness = psutil.Process()
            target = Target(f"http://127.0.0.1:{base.agg_port}", False, "agg",
                            tuple(worker_endpoints(base, base.topology("agg"))))
            for n in range(args.rounds):
                for scraping in (n % 2 == 0, n % 2 == 1):  # alternate which goes first
                    settings = base.model_copy(update={"bench_server_metrics": scraping})
                    tag = f"r{n}_{'on' if scraping else 'off'}"
                    cpu0 = (_cpu(harness), _cpu(server))
                    result = run_point(worker, settings, client, target=target, point=point,
                                       tag=tag, output_file=work / "results" / "points.jsonl",
                                       log=work / "logs" / f"{tag}.log")  # fmt: skip
                    row = result.row or {}
                    duration = float(row.get("duration") or "nan")
                    scrapes = result.observed.metrics if result.observed else None
                    sampler = (scrapes.sampler_cpu_s or 0.0) if scrapes else 0.0
                    figures = (float(row.get("median_itl_ms") or "nan"),
                               float(row.get("mean_itl_ms") or "nan"),
                               (_cpu(harness) - cpu0[0]) / duration,
                               (_cpu(server) - cpu0[1]) / duration, sampler / duration)
                    found[scraping].append(figures)
                    console.print(f"round {n} scraping {'on ' if scraping else 'off'}: ITL median "
                                  f"{figures[0]:.3f} ms, mean {figures[1]:.3f} ms; CPU harness "
                                  f"{figures[2]:.1%} (sampler thread {figures[4]:.2%}), server "
                                  f"{figures[3]:.1%} of a core")
        finally:
            worker.close()
            deploy.down(base, console, run_id="scrape-overhead")
    report(console, found, args)


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def report(console: Console, found: dict[bool, list[tuple[float, ...]]],
           args: argparse.Namespace) -> None:
    """The paired on/off ratio of mean ITL and the extra CPU, medians over rounds."""
    ratios = [on[1] / off[1] for on, off in zip(found[True], found[False], strict=True)]
    harness = [on[2] - off[2] for on, off in zip(found[True], found[False], strict=True)]
    server = [on[3] - off[3] for on, off in zip(found[True], found[False], strict=True)]
    sampler = [on[4] for on in found[True]]
    console.print(f"{args.rounds} rounds, interval {args.interval:g} s: mean ITL on/off median "
                  f"{statistics.median(ratios):.4f} (rounds: "
                  f"{', '.join(f'{r:.3f}' for r in ratios)}); extra CPU from scraping: harness "
                  f"{statistics.median(harness):+.2%} (sampler thread alone "
                  f"{statistics.median(sampler):.2%}), server {statistics.median(server):+.2%} "
                  f"of a core; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
