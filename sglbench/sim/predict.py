"""Predict which topology of a GPU budget serves a workload best, on the virtual clock.

For a budget of N GPUs (and TP options), :func:`predict` simulates aggregated serving with N/tp
replicas and every xPyD split with (x + y) * tp = N (:func:`sglbench.sim.topology.splits`)
through :func:`sglbench.sim.replay.replay`, and ranks them:

* with SLOs (TTFT and/or TPOT in ms, an attainment share, default 90%): by goodput per GPU, the
  highest Poisson request rate at which that share of requests meets every SLO (the rule of
  ``sglang.benchmark.goodput``), divided by the GPUs. The rate is found by doubling from
  ``start_rate`` per GPU until the attainment fails, then bisecting (``rate_steps`` points);
  each rate is judged on at least 15 s of arrivals (more prompts than the sweep's if needed);
* without SLOs: by output tok/s per GPU at matched latency: each topology's best point of the
  sweep whose p99 ITL is within the loosest of the topologies' best p99 ITLs.

Every row written is the bench client's row format, marked ``"predicted": true`` and
``"simulated": true`` with its topology and GPU count, so a report can show it beside
measured rows. ``python -m sglbench.sim.predict --help`` for the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sglbench.sim.profiles import Profile
from sglbench.sim.replay import attainment, run_point, summarize
from sglbench.sim.topology import Topology, build, splits
from sglbench.sim.workload import Workload


@dataclass(frozen=True)
class Slo:
    """Latency targets (ms) and the share of requests that must meet all of them."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    attainment: float = 0.9

    def __post_init__(self) -> None:
        if self.ttft_ms is None and self.tpot_ms is None:
            raise ValueError("an SLO needs a TTFT or a TPOT target")
        if not 0.0 < self.attainment <= 1.0:
            raise ValueError(f"SLO attainment must be in (0, 1], got {self.attainment}")


@dataclass
class TopologyResult:
    """One topology's rows and score."""

    topology: Topology
    rows: list[dict[str, Any]]
    score: float
    best: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The JSON summary line of this topology."""
        gpus = self.topology.gpus
        best = self.best
        return {
            "topology": self.topology.name,
            "gpus": gpus,
            "score": self.score,
            "request_rate_per_gpu": best["request_throughput"] / gpus,
            "output_tok_s_per_gpu": best["output_throughput"] / gpus,
            "p99_itl_ms": best["p99_itl_ms"],
            "mean_ttft_ms": best["mean_ttft_ms"],
            "best_row_tag": best["tag"],
        }


def _mark(row: dict[str, Any], topo: Topology, profile: Profile) -> dict[str, Any]:
    gpus = topo.gpus
    row.update(
        predicted=True,
        simulated=True,
        profile=profile.name,
        output_tok_s_per_gpu=row["output_throughput"] / gpus,
        total_tok_s_per_gpu=row["total_throughput"] / gpus,
        output_tok_s_per_decode_gpu=(row["output_throughput"] / topo.decode_gpus)
        if topo.decode_gpus else None,
        input_tok_s_per_prefill_gpu=(row["input_throughput"] / topo.prefill_gpus)
        if topo.prefill_gpus else None,
    )  # fmt: skip
    return row


MIN_ARRIVAL_SECONDS = 15.0  # a rate is judged on at least this long a stream of arrivals
MAX_PROMPTS = 6000


def _at_rate(
    topo: Topology, w: Workload, rate: float, slo: Slo, profile: Profile
) -> tuple[float, dict[str, Any]]:
    # A short burst at a rate the servers cannot sustain still meets the SLO: the queue has no
    # time to grow. Judge every rate on enough arrivals to show it.
    n = min(MAX_PROMPTS, max(w.num_prompts, math.ceil(rate * MIN_ARRIVAL_SECONDS)))
    point = replace(w, request_rate=rate, num_prompts=n)
    records, duration = run_point(topo, point)
    share = attainment(records, slo.ttft_ms, slo.tpot_ms)
    tag = f"predicted_{topo.name}_in{w.input_len}_out{w.output_len}_rate{rate:.3g}"
    row = _mark(summarize(records, duration, point, topo, tag), topo, profile)
    row["slo_attainment"] = share
    row["request_goodput"] = share * len(records) / duration
    row["goodput_slos_ms"] = {
        k: v for k, v in (("ttft", slo.ttft_ms), ("tpot", slo.tpot_ms)) if v is not None
    }
    return share, row


def capacity(
    topo: Topology, w: Workload, slo: Slo, profile: Profile, start_rate: float, steps: int
) -> tuple[float, list[dict[str, Any]]]:
    """Highest request rate meeting ``slo`` (0 if even ``start_rate`` fails) and its rows."""
    rows: list[dict[str, Any]] = []
    low, high = 0.0, start_rate * topo.gpus
    for _ in range(steps):
        share, row = _at_rate(topo, w, high, slo, profile)
        rows.append(row)
        if share < slo.attainment:
            break
        low, high = high, high * 2
    else:
        return low, rows
    for _ in range(max(0, steps - len(rows))):
        mid = (low + high) / 2 if low else high / 2
        share, row = _at_rate(topo, w, mid, slo, profile)
        rows.append(row)
        low, high = (mid, high) if share >= slo.attainment else (low, mid)
    return low, rows


def _sweep(topo: Topology, sweep: Sequence[Workload], profile: Profile) -> list[dict[str, Any]]:
    rows = []
    for w in sweep:
        tag = f"predicted_{topo.name}_in{w.input_len}_out{w.output_len}_c{w.max_concurrency}"
        records, duration = run_point(topo, w)
        rows.append(_mark(summarize(records, duration, w, topo, tag), topo, profile))
    return rows


def predict(
    profile: Profile,
    gpus: int,
    sweep: Sequence[Workload],
    *,
    decode_profile: Profile | None = None,
    tp_options: Sequence[int] = (1,),
    slo: Slo | None = None,
    start_rate: float = 1.0,
    rate_steps: int = 10,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[TopologyResult], dict[str, Any]]:
    """Simulate every topology of ``gpus`` GPUs on ``sweep``; results best first and a summary.

    Args:
        profile: Profile of every server (of the prefill servers with ``decode_profile``).
        gpus: The GPU budget N.
        sweep: Workloads (e.g. one per concurrency). With ``slo``, their request rates are
            searched instead, one capacity per workload, and the score is the smallest of them.
        decode_profile: Profile of the decode servers, if different.
        tp_options: TP sizes to try (every server of a topology has the same).
        slo: Latency targets: rank by goodput per GPU; None: by tok/s/GPU at matched ITL.
        start_rate: First request rate per GPU of the capacity search.
        rate_steps: Simulated points per capacity search, at most.
        progress: Called with a line per finished topology.
    """
    say = progress or (lambda _line: None)
    topologies = [
        build(name, profile, decode_profile, tp=tp)
        for tp in tp_options
        if gpus % tp == 0
        for name in splits(gpus, tp)
    ]
    topologies = [replace(t, name=f"{t.name}_tp{t.agg[0].tp if t.agg else t.prefill[0].tp}")
                  if len(tp_options) > 1 else t for t in topologies]  # fmt: skip
    results = []
    for topo in topologies:
        if slo is None:
            rows = _sweep(topo, sweep, profile)
            results.append(TopologyResult(topo, rows, 0.0, rows[0]))
        else:
            caps, rows = [], []
            for w in sweep:
                cap, found = capacity(topo, w, slo, profile, start_rate, rate_steps)
                caps.append(cap)
                rows += found
            good = [r for r in rows if r["slo_attainment"] >= slo.attainment] or rows
            best = max(good, key=lambda r: float(r["request_rate"]))
            results.append(TopologyResult(topo, rows, min(caps) / topo.gpus, best))
        say(f"simulated {topo.name}")
    if slo is None:
        _score_matched_itl(results)
    results.sort(key=lambda r: r.score, reverse=True)
    summary = {
        "predicted": True,
        "profile": profile.name,
        "decode_profile": decode_profile.name if decode_profile else None,
        "gpus": gpus,
        "ranked_by": "goodput per GPU (req/s)" if slo else "output tok/s per GPU at matched ITL",
        "slo": vars(slo) if slo else None,
        "ranking": [r.summary() for r in results],
    }
    return results, summary


def _score_matched_itl(results: list[TopologyResult]) -> None:
    """Score = best tok/s/GPU among points with p99 ITL within the loosest best p99 ITL."""
    matched = max(min(r["p99_itl_ms"] for r in res.rows) for res in results)
    for res in results:
        ok = [r for r in res.rows if r["p99_itl_ms"] <= matched * (1 + 1e-9)]
        res.best = max(ok, key=lambda r: float(r["output_throughput"]))
        res.score = res.best["output_throughput"] / res.topology.gpus
    if not math.isfinite(matched):
        raise ValueError("no point of the sweep produced an ITL")


def write(results: list[TopologyResult], summary: dict[str, Any], out_dir: Any) -> list[str]:
    """Write ``predicted_<topology>.jsonl`` per topology and ``prediction.json``; the paths."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for res in results:
        path = out / f"predicted_{res.topology.name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in res.rows), "utf-8")
        paths.append(str(path))
    (out / "prediction.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return [*paths, str(out / "prediction.json")]


def _ints(text: str, flag: str) -> list[int]:
    from sglbench.errors import ConfigError

    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers") from exc
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} {text!r}: expected integers >= 1")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sglbench.sim.predict``: simulate, rank, print, write rows and summary."""
    import argparse
    import sys

    from sglbench.errors import ConfigError
    from sglbench.sim.profiles import DEFAULT_PROFILE, load_profile
    from sglbench.sim.tables import prediction_table

    p = argparse.ArgumentParser(
        prog="python -m sglbench.sim.predict", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name or .json")
    p.add_argument("--decode-profile", help="profile of the decode servers, if different")
    p.add_argument("--gpus", type=int, required=True, help="GPU budget N")
    p.add_argument("--tp", default="1", help="TP sizes to try, comma-separated")
    p.add_argument("--input-len", type=int, required=True)
    p.add_argument("--output-len", type=int, required=True)
    p.add_argument("--range-ratio", type=float, default=0.0)
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--concurrency", default="8,32,128", help="sweep (without SLOs)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--slo-ttft-ms", type=float)
    p.add_argument("--slo-tpot-ms", type=float)
    p.add_argument("--slo-attainment", type=float, default=0.9)
    p.add_argument("--start-rate", type=float, default=1.0, help="req/s per GPU to start from")
    p.add_argument("--rate-steps", type=int, default=10, help="points per capacity search")
    p.add_argument("--out-dir", required=True, help="where to write the rows and summary")
    args = p.parse_args(argv)  # fmt: skip
    try:
        if args.gpus < 1:
            raise ConfigError(f"--gpus must be >= 1, got {args.gpus}")
        profile = load_profile(args.profile)
        decode = load_profile(args.decode_profile) if args.decode_profile else None
        slo = None
        if args.slo_ttft_ms is not None or args.slo_tpot_ms is not None:
            slo = Slo(args.slo_ttft_ms, args.slo_tpot_ms, args.slo_attainment)
        concurrencies = _ints(args.concurrency, "--concurrency") if slo is None else [0]
        sweep = [
            Workload(args.num_prompts, args.input_len, args.output_len, args.range_ratio,
                     max_concurrency=c or None, seed=args.seed)
            for c in concurrencies
        ]  # fmt: skip
        results, summary = predict(
            profile, args.gpus, sweep, decode_profile=decode, tp_options=_ints(args.tp, "--tp"),
            slo=slo, start_rate=args.start_rate, rate_steps=args.rate_steps,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )  # fmt: skip
        paths = write(results, summary, args.out_dir)
    except (ConfigError, ValueError) as exc:
        print(f"sglbench.sim.predict: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    print(prediction_table(summary))
    print("written: " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
