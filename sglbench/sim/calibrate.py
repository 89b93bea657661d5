"""Fit a profile's efficiencies and overheads to measured runs, and say how far to trust it.

Every measured point (:mod:`sglbench.sim.points`) is replayed on the virtual clock
(:mod:`sglbench.sim.replay`) with candidate parameters; ``scipy.optimize.least_squares``
(bounded, trust-region reflective, soft-L1 loss so that one hiccup of a real run does not drag
the fit; deterministic: fixed engine seed 0, fixed start) minimises the log errors of output
throughput, mean ITL and mean TTFT (TTFT weighted 0.4: it is the noisiest and, through the
mini-lb, distorted). The fit runs in stages, so that each parameter is fitted where it shows:

* ``agg`` points fit the server itself: decode step and per-request costs, prefill overhead,
  compute efficiency, request latency and the tokenizer hand-over.
* PD points then fit the PD costs: KV-transfer latency, the decode server's admission and
  polling costs and, for xPyD on separate GPUs, the KV link's bandwidth. Without agg points
  both groups are fitted on the PD points.
* With ``decode_profile`` (heterogeneous PD: e.g. GH200 prefill, A100 decode), the prefill
  profile stays as given and the decode profile's bandwidth efficiency, step costs, link and
  transfer latency are fitted.

Parameters the runs cannot show (HBM bandwidth efficiency on agg runs of short contexts, the
scheduler's per-request CPU, eager decode above the CUDA-graph limit) keep the profile's values.
The leave-one-out error of a point is the error of predicting it from a fit without it (warm
started from the full fit), per stage. ``python -m sglbench.sim.calibrate --help`` for the CLI.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import least_squares  # type: ignore[import-untyped]

from sglbench.sim.points import METRICS, Point
from sglbench.sim.profiles import Profile
from sglbench.sim.replay import replay
from sglbench.sim.topology import build

WEIGHTS = {"output_throughput": 1.0, "mean_itl_ms": 1.0, "mean_ttft_ms": 0.4}


@dataclass(frozen=True)
class Param:
    """One fitted field (of ``efficiency``, or ``gpu.link_bandwidth_GBps``) and its bounds."""

    name: str
    low: float
    high: float
    log: bool = False

    def value(self, u: float) -> float:
        """The value at normalised position ``u`` in [0, 1]."""
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def position(self, value: float) -> float:
        """Normalised position of ``value`` (clipped into the bounds)."""
        v = min(max(value, self.low), self.high)
        if self.log:
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)


CORE = (
    Param("step_overhead_ms", 0.2, 6.0),
    Param("per_seq_overhead_ms", 0.0, 0.1),
    Param("prefill_overhead_ms", 1.0, 40.0),
    Param("compute_eff", 0.2, 1.0),
    Param("request_latency_ms", 0.0, 30.0),
    Param("handover_ms", 0.0, 5.0),
)
PD_COSTS = (
    Param("kv_transfer_latency_ms", 0.0, 100.0),
    Param("kv_admit_overhead_ms", 0.0, 10.0),
    Param("pd_decode_step_overhead_ms", 0.0, 5.0),
)
LINK = Param("link_bandwidth_GBps", 0.01, 200.0, log=True)
DECODE_SIDE = (
    Param("bandwidth_eff", 0.3, 1.0),
    Param("step_overhead_ms", 0.2, 6.0),
    Param("per_seq_overhead_ms", 0.0, 0.1),
    LINK,
    Param("kv_transfer_latency_ms", 0.0, 200.0),
)


def from_start(profile: Profile) -> Profile:
    """``profile`` reset to the starting values its calibration recorded (if any)."""
    start = profile.provenance.get("start")
    return with_values(profile, dict(start)) if isinstance(start, dict) else profile


def with_values(profile: Profile, values: dict[str, float]) -> Profile:
    """``profile`` with some efficiency fields (and the link bandwidth) replaced."""
    gpu = profile.gpu
    if LINK.name in values:
        gpu = replace(gpu, link_bandwidth_GBps=values[LINK.name])
    eff = {k: v for k, v in values.items() if k != LINK.name}
    return replace(profile, gpu=gpu, efficiency=replace(profile.efficiency, **eff))


def get_value(profile: Profile, name: str) -> float:
    """Current value of a fitted field."""
    return (
        profile.gpu.link_bandwidth_GBps if name == LINK.name else getattr(profile.efficiency, name)
    )


@dataclass
class Profiles:
    """The profile(s) a point is simulated with: every server, or prefill + decode."""

    main: Profile
    decode: Profile | None = None

    def simulate(self, point: Point) -> dict[str, float]:
        """The simulated row of ``point``."""
        topo = build(point.topology, self.main, self.decode)
        row = replay(topo, point.workload, seed=0, tag=point.tag)
        return {k: float(v) for k, v in row.items() if isinstance(v, int | float)}


@dataclass(frozen=True)
class Stage:
    """Parameters fitted on some points, on the main or on the decode profile."""

    name: str
    params: tuple[Param, ...]
    points: tuple[Point, ...]
    on_decode: bool = False


def _residuals(sim: dict[str, float], measured: dict[str, float]) -> list[float]:
    out = []
    for m in METRICS:
        ratio = max(sim.get(m, 0.0), 1e-9) / max(measured[m], 1e-9)
        out.append(WEIGHTS[m] * math.log(ratio))
    return out


def _apply(profiles: Profiles, stage: Stage, u: Sequence[float] | np.ndarray) -> Profiles:
    values = {p.name: p.value(float(x)) for p, x in zip(stage.params, u, strict=True)}
    if stage.on_decode:
        assert profiles.decode is not None
        return Profiles(profiles.main, with_values(profiles.decode, values))
    return Profiles(with_values(profiles.main, values), profiles.decode)


def _start(profiles: Profiles, stage: Stage) -> np.ndarray:
    prof = profiles.decode if stage.on_decode and profiles.decode else profiles.main
    u = np.asarray([p.position(get_value(prof, p.name)) for p in stage.params], dtype=float)
    clipped: np.ndarray = np.clip(u, 1e-3, 1 - 1e-3)
    return clipped


def fit_stage(
    profiles: Profiles, stage: Stage, points: Sequence[Point], max_nfev: int, u0: np.ndarray | None
) -> tuple[Profiles, np.ndarray]:
    """Fit ``stage``'s parameters on ``points``; the fitted profiles and normalised solution."""
    start = _start(profiles, stage) if u0 is None else u0

    def fun(u: np.ndarray) -> np.ndarray:
        trial = _apply(profiles, stage, u)
        return np.asarray([r for p in points for r in _residuals(trial.simulate(p), p.measured)])

    result = least_squares(
        fun, start, bounds=(0.0, 1.0), method="trf", loss="soft_l1", f_scale=0.05,
        diff_step=0.02, max_nfev=max_nfev, ftol=1e-4, xtol=1e-3,
    )  # fmt: skip
    return _apply(profiles, stage, result.x), np.asarray(result.x)


@dataclass
class PointResult:
    """A point's measured numbers, the fitted model's, and the leave-one-out prediction's."""

    point: Point
    fitted: dict[str, float]
    loo: dict[str, float] | None = None

    def error(self, metric: str, loo: bool) -> float:
        """Signed error in % of the measured value."""
        sim = self.loo if loo else self.fitted
        if sim is None:
            return math.nan
        ref = self.point.measured[metric]
        return 100.0 * (sim[metric] - ref) / ref if ref else math.nan


@dataclass
class Calibration:
    """What :func:`calibrate` found."""

    profiles: Profiles
    results: list[PointResult]
    stages: list[Stage] = field(default_factory=list)
    start: dict[str, float] = field(default_factory=dict)  # fitted fields' starting values

    def medians(self, loo: bool = True) -> dict[str, dict[str, float]]:
        """Median |error| % per family (agg, pd_intra, pd) and metric."""
        out: dict[str, dict[str, float]] = {}
        for family in sorted({r.point.family for r in self.results}):
            rows = [r for r in self.results if r.point.family == family]
            out[family] = {
                m: statistics.median(abs(r.error(m, loo)) for r in rows) for m in METRICS
            }
        return out

    def worst(self, family: str, loo: bool = True) -> PointResult:
        """The row of ``family`` with the largest |error| relative to its target (10/10/25%)."""
        rows = [r for r in self.results if r.point.family == family]
        targets = {"output_throughput": 10.0, "mean_itl_ms": 10.0, "mean_ttft_ms": 25.0}
        return max(rows, key=lambda r: max(abs(r.error(m, loo)) / targets[m] for m in METRICS))


def plan(points: Sequence[Point], heterogeneous: bool) -> list[Stage]:
    """The fit stages for these points (see the module docstring)."""
    agg = tuple(p for p in points if p.family == "agg")
    pd = tuple(p for p in points if p.family != "agg")
    if heterogeneous:
        return [Stage("decode", DECODE_SIDE + PD_COSTS[1:], pd, on_decode=True)] if pd else []
    stages = [Stage("server", CORE, agg)] if agg else []
    if pd:
        params = PD_COSTS + ((LINK,) if any(p.family == "pd" for p in pd) else ())
        stages.append(Stage("pd", params if agg else CORE + params, pd))
    return stages


def calibrate(
    points: Sequence[Point],
    profile: Profile,
    decode_profile: Profile | None = None,
    *,
    loo: bool = True,
    max_nfev: int = 40,
    loo_nfev: int = 8,
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Fit ``profile`` (or ``decode_profile``, for heterogeneous PD) to ``points``.

    Args:
        points: Measured points (:func:`sglbench.sim.points.load_points`).
        profile: Profile of every server (of the prefill servers with ``decode_profile``).
        decode_profile: Profile of the decode servers; when given, it is the one fitted.
        loo: Also compute every point's leave-one-out prediction.
        max_nfev: Replays of all points per stage fit, at most (one replay = all points once).
        loo_nfev: The same for each leave-one-out refit (warm started from the full fit).
        progress: Called with a line per finished step.
    """
    say = progress or (lambda _line: None)
    profiles = Profiles(profile, decode_profile)
    stages = plan(points, decode_profile is not None)
    base = decode_profile or profile
    start = {p.name: get_value(base, p.name) for s in stages for p in s.params}
    solutions = []
    for stage in stages:
        profiles, u = fit_stage(profiles, stage, stage.points, max_nfev, None)
        solutions.append(u)
        say(f"fitted stage {stage.name} on {len(stage.points)} points")
    results = {id(p): PointResult(p, profiles.simulate(p)) for p in points}
    if loo:
        refits = [_Refit(profiles, stage, held, loo_nfev, u)
                  for stage, u in zip(stages, solutions, strict=True) if len(stage.points) >= 2
                  for held in stage.points]  # fmt: skip
        for refit, predicted in zip(refits, _run_all(refits), strict=True):
            results[id(refit.held)].loo = predicted
            say(f"leave-one-out {refit.held.tag}")
    return Calibration(profiles, [results[id(p)] for p in points], stages, start)


@dataclass(frozen=True)
class _Refit:
    """One leave-one-out refit: ``stage`` fitted without ``held`` (warm started at ``u``)."""

    profiles: Profiles
    stage: Stage
    held: Point
    max_nfev: int
    u: np.ndarray

    def predict(self) -> dict[str, float]:
        rest = [p for p in self.stage.points if p is not self.held]
        refit, _ = fit_stage(self.profiles, self.stage, rest, self.max_nfev, self.u)
        return refit.simulate(self.held)


def _predict(refit: _Refit) -> dict[str, float]:
    return refit.predict()


def _run_all(refits: Sequence[_Refit]) -> Iterator[dict[str, float]]:
    """The refits' predictions in order, on every core: they are independent and deterministic
    (engine seed 0, fixed starts), so the result is the same as one after the other."""
    workers = min(len(refits), len(os.sched_getaffinity(0)))
    if workers < 2:
        yield from (r.predict() for r in refits)
        return
    # fork: the workers inherit the loaded points and profiles instead of re-importing them.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield from pool.map(_predict, refits)


def fitted_profile(cal: Calibration, name: str, sources: Sequence[str]) -> Profile:
    """The fitted profile (the decode one for heterogeneous PD) with its provenance."""
    base = cal.profiles.decode or cal.profiles.main
    params = sorted({p.name for s in cal.stages for p in s.params})
    provenance = {
        "tool": "sglbench.sim.calibrate",
        "fitted_from": base.name,
        "sources": sorted(set(sources)),
        "points": len(cal.results),
        "fitted": {p: get_value(base, p) for p in params},
        "start": cal.start,  # a re-fit from these values reproduces the profile
        "fit_median_abs_error_pct": cal.medians(False),
        "engine_seed": 0,
    }
    if any(r.loo is not None for r in cal.results):
        provenance["loo_median_abs_error_pct"] = cal.medians(True)
    if cal.profiles.decode is not None:
        provenance["prefill_profile"] = cal.profiles.main.name
    description = f"{base.description.split(';')[0]}; fitted by sglbench.sim.calibrate"
    return replace(base, name=name, description=description, provenance=provenance)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sglbench.sim.calibrate``: fit, print the table, write the profile."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from sglbench.errors import ConfigError
    from sglbench.sim.points import load_points
    from sglbench.sim.profiles import DEFAULT_PROFILE, load_profile
    from sglbench.sim.tables import calibration_table

    parser = argparse.ArgumentParser(
        prog="python -m sglbench.sim.calibrate", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--path",
        type=Path,
        action="append",
        required=True,
        help="a results JSONL file or a run directory (repeatable)",
    )
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help="starting profile (name or .json) of every server, or of the prefill",
    )
    parser.add_argument(
        "--decode-profile", help="profile of the decode servers; it is the one fitted"
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the fitted profile")
    parser.add_argument("--name", help="name of the fitted profile (default: <from>-fitted)")
    parser.add_argument("--no-loo", action="store_true", help="skip the leave-one-out errors")
    parser.add_argument("--max-evals", type=int, default=40, help="replays per stage fit")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)  # fmt: skip
    try:
        if args.max_evals < 2:
            raise ConfigError(f"--max-evals must be >= 2, got {args.max_evals}")
        points = load_points(args.path)
        profile = load_profile(args.profile)
        decode = load_profile(args.decode_profile) if args.decode_profile else None
        say = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        cal = calibrate(points, profile, decode, loo=not args.no_loo, max_nfev=args.max_evals,
                        progress=say)  # fmt: skip
        base = decode or profile
        out = fitted_profile(cal, args.name or f"{base.name}-fitted", [p.source for p in points])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out.to_dict(), indent=2) + "\n", "utf-8")
    except ConfigError as exc:
        print(f"sglbench.sim.calibrate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(calibration_table(cal))
    print(f"profile written to {args.out} (use it with --sim-profile {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
