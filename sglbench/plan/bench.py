"""Pure builder: the flags of SGLang's bench client (``sglang.benchmark.serving``) for one point.

The same workload flags for agg and PD. Beyond the original ``23_``/``24_`` scripts: the seed,
range ratio and warmup are explicit (their defaults changed between client versions), and EOS
handling is the same for both modes (0.5.23 ignores EOS by default and has no ``--ignore-eos``).
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from sglbench.plan.sweep import SweepPoint, sweep_points
from sglbench.plan.workload import workload_args
from sglbench.settings import Settings

BENCH_MODULE = "sglang.benchmark.serving"


def bench_args(
    settings: Settings,
    *,
    base_url: str,
    tag: str,
    output_file: Path,
    pd: bool,
    point: SweepPoint | None = None,
) -> list[str]:
    """``sglang.benchmark.serving`` arguments; the same workload flags for agg and PD."""
    point = point or sweep_points(settings)[0]
    rate = "inf" if math.isinf(point.request_rate) else f"{point.request_rate:g}"
    args = [
        "--backend", settings.bench_backend,
        "--dataset-name", settings.bench_dataset,
        "--num-prompts", str(settings.bench_num_prompts),
        "--random-input-len", str(point.input_len),
        "--random-output-len", str(point.output_len),
        "--request-rate", rate,
        "--max-concurrency", str(point.max_concurrency),
    ]  # fmt: skip
    if pd:
        args.append("--pd-separated")
    args += ["--base-url", base_url, "--output-file", str(output_file), "--tag", tag]
    if not settings.bench_ignore_eos:
        # The client ignores EOS by default and has no --ignore-eos flag (0.5.23 rejects it).
        args.append("--disable-ignore-eos")
    args += [
        "--random-range-ratio", f"{settings.bench_range_ratio:g}",
        "--seed", str(settings.bench_seed),
        "--warmup-requests", str(settings.bench_warmup_requests),
    ]
    if settings.bench_dataset_path:
        args += ["--dataset-path", settings.bench_dataset_path]
    if settings.tokenizer_path:
        args += ["--tokenizer", settings.tokenizer_path]
    if settings.bench_rust_client:
        args.append("--rust-client")
    args += goodput_args(settings)
    args += workload_args(settings)  # datasets beyond random, flush, cache report (issue 11)
    args += shlex.split(settings.bench_extra_args)
    return args


def slo_targets(settings: Settings) -> dict[str, float]:
    """The client's goodput targets in ms, by its keys (ttft, tpot, e2el).

    BENCH_SLO_ITL_MS becomes the ``tpot`` target: the client checks a per-token target only on
    each request's TPOT (its mean inter-token time), and the report says so.
    """
    targets = {"ttft": settings.bench_slo_ttft_ms,
               "tpot": settings.bench_slo_tpot_ms or settings.bench_slo_itl_ms,
               "e2el": settings.bench_slo_e2e_ms}  # fmt: skip
    return {k: v for k, v in targets.items() if v is not None}


def goodput_args(settings: Settings) -> list[str]:
    """``--goodput ttft:MS tpot:MS e2el:MS`` when any SLO is set, else nothing."""
    targets = slo_targets(settings)
    if not targets:
        return []
    return ["--goodput", *(f"{k}:{v:g}" for k, v in targets.items())]
