"""Calibrate the simulator on the real runs in reference-results and print how far to trust it.

The reference runs (GH200 and A100, sglang 0.5.5/0.5.6, Qwen2.5-3B, lengths uniform in [1, L])
are grouped as :mod:`sglbench.sim.reference` says: ``agg`` and ``pd_intra`` (one GH200),
``pd_1pxd`` (GH200 prefill, x A100 decode servers, c64-128, 2k/512 tokens) and ``pd_inter`` (the
same pair at c8-32, never fitted: a check on unseen workloads).

* default (``--direct`` is the same): replay every reference point on the virtual clock with the
  shipped profiles and print measured vs simulated output throughput, mean ITL and mean TTFT,
  and the median |error| per group. Seconds.
* ``--loo``: fit the profiles as ``python -m sglbench.sim.calibrate`` does (GH200 on agg +
  pd_intra, then the A100 decode side on pd_1p*d) and print each point measured vs fitted with
  its leave-one-out error (fit without the point, predict it), the medians and the worst row of
  each group. ``--write-profiles`` then writes the fitted GH200 and A100 profiles into
  ``sglbench/sim/profiles/`` (how the shipped ones were made). Minutes.
* ``--http``: the agg and pd_intra points through the real HTTP simulator and SGLang's real
  bench client (PD through the real mini-lb), with the server's own view on stderr
  (``sim_replay.py``): measures the model plus this machine's client and server CPU.

Measured 2026-12-01 with ``--loo --write-profiles`` (2 shared cores, load average 5-10: 44 min),
leave-one-out median |error| (output throughput, mean ITL, mean TTFT); the medians are checked
by ``tests/integration/test_sim_reference_fit.py``:

* agg (12 points): 2.5%, 2.6%, 4.7%; worst row agg_n50_in128_out64_c8 (+49% throughput, -75%
  TTFT: that real run had a 600 ms p99 TTFT hiccup the other 11 do not show).
* pd_intra (12): 1.9%, 3.0%, 12.0%; worst pd_intra_n50_in128_out64_c8 (the same hiccup).
* pd_1p*d (8): 0.8%, 8.6%, 1.2%; worst pd_1p8d_n100_in2048_out512_c128 (ITL -22.5%): the
  measured ITL is the same for 1, 2, 4 and 8 decode servers (about 9 ms at 100 streams), which
  no per-server model gives; it looks like the mini-lb's streaming cap (~11k tokens/s), which the
  model has (``router_us_per_token``) but these profiles do not fit yet.
* pd_inter (14, never fitted; the same GH200 -> A100 pair at c8-32), default mode: 4.1%,
  15.0%, 9.1%: the A100's fitted step cost absorbed that cap, so its ITL is 12-16% high here.
* default mode on the fitted profiles: fit errors agg 2.3/2.4/3.6%, pd_intra 3.1/3.0/11.6%.

Usage:
    python benchmarks/sim_calibration.py [--direct | --loo [--write-profiles] | --http]
        [--references DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from sglbench.sim.calibrate import PointResult, fitted_profile
from sglbench.sim.points import METRICS, Point
from sglbench.sim.profiles import load_profile
from sglbench.sim.reference import DECODE_PROFILE, PREFILL_PROFILE, fit_reference, reference_points
from sglbench.sim.replay import replay
from sglbench.sim.tables import calibration_table
from sglbench.sim.topology import build

# The checkout sits beside shared/ (the project layout, and CI's), or SGLBENCH_REFERENCE_RESULTS.
REFERENCE_DIR = Path(
    os.environ.get(
        "SGLBENCH_REFERENCE_RESULTS",
        Path(__file__).resolve().parents[2] / "shared" / "reference-results",
    )
)
PROFILES_DIR = Path(__file__).resolve().parents[1] / "sglbench" / "sim" / "profiles"


def direct_table(groups: dict[str, list[Point]]) -> str:
    """Every point replayed with the shipped profiles: measured, simulated, error, medians."""
    gh200, a100 = load_profile(PREFILL_PROFILE), load_profile(DECODE_PROFILE)
    lines = [f"{'point':40} {'group':9} " + " | ".join(f"{m:>27}" for m in METRICS)]
    errors: dict[str, dict[str, list[float]]] = {}
    for group, points in groups.items():
        for p in points:
            decode = a100 if group in ("pd_1pxd", "pd_inter") else None
            sim = replay(build(p.topology, gh200, decode), p.workload, tag=p.tag)
            r = PointResult(p, {m: float(sim[m]) for m in METRICS})
            cells = []
            for m in METRICS:
                e = r.error(m, loo=False)
                errors.setdefault(group, {}).setdefault(m, []).append(abs(e))
                cells.append(f"{p.measured[m]:9.1f} {sim[m]:9.1f} {e:+7.1f}%")
            lines.append(f"{p.tag[:40]:40} {group:9} " + " | ".join(cells))
    for group, per in errors.items():
        text = ", ".join(f"{m} {statistics.median(v):.1f}%" for m, v in per.items())
        lines.append(f"median |error| {group}: {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen mode, print its table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--direct", action="store_true", help="the default: replay, no fit")
    parser.add_argument("--loo", action="store_true", help="fit with leave-one-out errors")
    parser.add_argument("--write-profiles", action="store_true", help="with --loo: ship them")
    parser.add_argument("--http", action="store_true", help="agg/pd_intra over real HTTP")
    parser.add_argument("--references", type=Path, default=REFERENCE_DIR, help="reference dir")
    args = parser.parse_args(argv)
    if not any(args.references.glob("*.jsonl")):
        print(f"no reference results in {args.references}", file=sys.stderr)
        return 2
    groups = reference_points(args.references)
    if args.http:
        from sim_replay import replay_http

        points = groups["agg"] + groups["pd_intra"]
        sims = replay_http(points, load_profile(PREFILL_PROFILE), PREFILL_PROFILE)
        for p, sim in zip(points, sims, strict=True):
            errs = " ".join(f"{m} {100 * (sim[m] / p.measured[m] - 1):+.1f}%" for m in METRICS)
            print(f"{p.tag:40} {errs}")
        return 0
    if not args.loo:
        print(direct_table(groups))
        return 0
    t0 = time.monotonic()
    gh, pair = fit_reference(
        args.references, progress=lambda line: print(line, file=sys.stderr, flush=True)
    )
    print(f"GH200 on agg + pd_intra (fitted {PREFILL_PROFILE}):")
    print(calibration_table(gh))
    print(f"\nA100 decode with the fitted GH200 prefill on pd_1p*d (fitted {DECODE_PROFILE}):")
    print(calibration_table(pair))
    print(f"\n{time.monotonic() - t0:.0f} s")
    if args.write_profiles:
        sources = [p.source for p in groups["agg"] + groups["pd_intra"]]
        for cal, name, src in (
            (gh, PREFILL_PROFILE, sources),
            (pair, DECODE_PROFILE, [p.source for p in groups["pd_1pxd"]]),
        ):
            prof = fitted_profile(cal, name, [Path(s).name for s in src])
            (PROFILES_DIR / f"{name}.json").write_text(json.dumps(prof.to_dict(), indent=2) + "\n")
            print(f"wrote {PROFILES_DIR / f'{name}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
