"""Load SGLang bench_serving JSONL results into one pandas DataFrame.

Every client version we meet writes a slightly different row: 0.5.2 (35 keys, no ``tag``),
0.5.5 (40 keys, the GH200 reference results), 0.5.23 (49 keys, p90/p95 and peak figures).
Rows are normalised to the columns in ``COLUMNS``; what a row does not say (prompt count, seed,
ignore-eos, GPUs per mode) comes from the run's ``metadata.json`` when there is one, else from the
file name, else from what the row implies.

Two layouts are read:
    results/<tag>.jsonl                 one file per ``invoke bench --tag T`` (any name)
    results/<run-id>/<mode>.jsonl       a sweep run (mode: agg, pd, pd_<x>p<y>d) beside
    results/<run-id>/metadata.json      its metadata sidecar (optional keys everywhere)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sglbench.display import as_number
from sglbench.errors import ResultsError
from sglbench.record import jsonl
from sglbench.record.metrics import METRICS_SUFFIX, PointMetrics, metrics_file_for, read_points
from sglbench.record.schema import METADATA_FILE, PointRecord, RunRecord, Workload
from sglbench.results.server import summarize
from sglbench.types import parse_mode_name

_TAG_MODE_RE = re.compile(r"^(agg|pd_intra|pd_inter|pd_\d+p\d+d)(?:_|$)")
_NUM_PROMPTS_RE = re.compile(r"(?:^|_)n(\d+)(?:_|$)")
_HINT = "run `invoke bench --tag T` (or `invoke compare`) first"

# Issue 11: the workload beyond random lengths, and what was observed around each point (its
# record's ``observed`` and its line in the metrics file); NA when not recorded.
SERVER_COLUMNS = (
    "workload_variant", "cache_flushed", "flush_failed", "prefix_hit_rate",
    "kv_bootstrap_failed", "kv_transfer_failed", "metrics_error", "late_arrivals",
    "late_overrun", "late_median_ms", "late_gap_ms",
)  # fmt: skip
# Columns of the loaded frame, in order. Latencies are milliseconds, throughputs per second.
WORKLOAD_COLUMNS = (
    "dataset", "num_prompts", "input_len", "output_len", "range_ratio",
    "seed", "ignore_eos", "warmup", "request_rate", "max_concurrency",
)  # fmt: skip
LATENCY_COLUMNS = tuple(
    f"{stat}_{metric}_ms"
    for metric in ("ttft", "itl", "tpot", "e2e")
    for stat in ("mean", "median", "p99")
)
COLUMNS = (
    "tag", "mode", "run_id", "file", "path", "line", "backend", *WORKLOAD_COLUMNS,
    "duration_s", "completed", "failed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "input_throughput", "output_throughput", "total_throughput",
    *LATENCY_COLUMNS, "measured_concurrency", "request_goodput", "slo_attainment",
    "server_version", "simulated", "gpus", "prefill_gpus", "decode_gpus", "gpus_source",
    "client_limited", "goodput_slos", "capacity_search", "predicted",
    *SERVER_COLUMNS,
)  # fmt: skip


@dataclass(frozen=True)
class _FileContext:
    """What the file's place on disk says about its rows."""

    path: Path
    run_id: str | None
    mode: str | None
    record: RunRecord | None
    metrics: dict[str, PointMetrics] = field(default_factory=dict)


def load_results(paths: Sequence[Path]) -> pd.DataFrame:
    """Read bench_serving results into one row per JSON line.

    Args:
        paths: ``.jsonl`` files or directories; a directory is searched recursively, and in a run
            directory (one holding ``metadata.json``) only ``<mode>.jsonl`` files are read.

    Returns:
        A DataFrame with the columns of ``COLUMNS``; what is unknown (run_id outside a run
        directory, seed without metadata, ...) is NA: test it with ``pd.isna``, not ``is None``.

    Raises:
        ResultsError: a path is missing, holds no results, or a line is not a result row.
    """
    rows: list[dict[str, Any]] = []
    for file in result_files(paths):
        ctx = _file_context(file)
        for lineno, record in jsonl.read_rows(file, strict=True):
            rows.append(normalise_row(record, ctx, lineno))
    if not rows:
        where = ", ".join(str(p) for p in paths) or "(no paths)"
        raise ResultsError(f"{where}: the result files hold no benchmark rows; {_HINT}")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def result_files(paths: Sequence[Path]) -> list[Path]:
    """List the result files under ``paths`` (sorted, no duplicates).

    Raises:
        ResultsError: a path does not exist, or no ``.jsonl`` file is found under the paths.
    """
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            found.update(dict.fromkeys(p for p in sorted(path.rglob("*.jsonl")) if _is_result(p)))
        else:
            raise ResultsError(f"{path}: no such results file or directory; {_HINT}")
    if not found:
        where = ", ".join(str(p) for p in paths) or "(no paths)"
        raise ResultsError(f"{where}: no *.jsonl result files found; {_HINT}")
    return list(found)


def _is_result(path: Path) -> bool:
    # In a run directory only <mode>.jsonl are results; other JSONL there belong to the run.
    if path.name.endswith(METRICS_SUFFIX):  # a bench's server metrics beside its results
        return False
    return not (path.parent / METADATA_FILE).is_file() or parse_mode_name(path.stem) is not None


def _file_context(path: Path) -> _FileContext:
    record = RunRecord.load(path.parent)
    metrics = read_points(metrics_file_for(path))
    if record is None:
        return _FileContext(path, None, None, None, metrics)
    mode = path.stem if parse_mode_name(path.stem) is not None else None
    return _FileContext(path, record.run_id, mode, record, metrics)


def normalise_row(record: Mapping[str, Any], ctx: _FileContext, lineno: int) -> dict[str, Any]:
    """Map one bench_serving row (any client version) to the ``COLUMNS`` of the frame."""
    tag = str(record.get("tag") or ctx.path.stem)
    mode = ctx.mode or infer_mode(tag, ctx.path.stem, record.get("server_info"))
    run = ctx.record
    workload = run.workload if run and run.workload else Workload()
    point = run.point(tag) if run else None
    num_prompts, failed = _prompt_counts(record, ctx, tag, workload, point)
    gpus, gpus_source = gpus_for_mode(mode, run)
    prefill_gpus, decode_gpus = _role_gpus(mode, run, gpus)
    row: dict[str, Any] = {
        "tag": tag, "mode": mode, "run_id": ctx.run_id, "file": ctx.path.name,
        "path": str(ctx.path), "line": lineno, "backend": record.get("backend"),
        "dataset": record.get("dataset_name") or workload.dataset,
        "num_prompts": num_prompts,
        "input_len": _input_len(record),
        "output_len": _output_len(record),
        "range_ratio": _float(record.get("random_range_ratio", workload.range_ratio)),
        "seed": workload.seed, "ignore_eos": workload.ignore_eos, "warmup": workload.warmup,
        "request_rate": _float(record.get("request_rate")),
        "max_concurrency": _float(record.get("max_concurrency")),
        "duration_s": _float(record.get("duration")),
        "completed": int(record.get("completed") or 0), "failed": failed,
        "measured_concurrency": _float(record.get("concurrency")),
        "server_version": _server_version(record.get("server_info")),
        "simulated": is_simulated(record.get("server_info"), run),
        "gpus": gpus, "prefill_gpus": prefill_gpus, "decode_gpus": decode_gpus,
        "gpus_source": gpus_source,
        "client_limited": point.client_limited if point else None,
        "goodput_slos": _slos(record.get("goodput_slos_ms")),
        "capacity_search": bool(point and point.capacity_search),
        "predicted": bool(record.get("predicted")) or bool(run and run.predicted),
    }  # fmt: skip
    for key in ("total_input_tokens", "total_output_tokens"):
        row[key] = int(record.get(key) or 0)
    for key in ("request_throughput", "input_throughput", "output_throughput",
                "total_throughput", "request_goodput", "slo_attainment"):  # fmt: skip
        row[key] = _float(record.get(key))
    for column in LATENCY_COLUMNS:
        row[column] = _float(record.get(column.replace("_e2e_", "_e2e_latency_")))
    row.update(server_columns(workload, point, ctx.metrics.get(tag)))
    return row


def infer_mode(tag: str, stem: str, server_info: object = None) -> str:
    """Name the serving mode of a row from its tag or file name, like the reference files.

    ``agg_...`` -> agg; ``pd_intra_...``/``pd_inter_...``/``pd_1p4d_...`` keep their name; any
    other tag with a ``pd`` or ``disagg`` word, or a row whose server_info shows prefill/decode
    workers, -> pd; everything else -> agg.
    """
    for name in (tag.lower(), stem.lower()):
        match = _TAG_MODE_RE.match(name)
        if match:
            return match.group(1)
    words = re.split(r"[^a-z0-9]+", f"{tag} {stem}".lower())
    if any(w.startswith("pd") or "disagg" in w for w in words):
        return "pd"
    if isinstance(server_info, dict) and ("prefill" in server_info or "decode" in server_info):
        return "pd"
    if isinstance(server_info, dict) and server_info.get("disaggregation_mode") in (
        "prefill",
        "decode",
    ):
        return "pd"
    return "agg"


def gpus_for_mode(mode: str, run: RunRecord | None) -> tuple[int, str]:
    """GPUs a mode used: from the run record, else assumed from the mode's name.

    Returns:
        ``(gpus, source)`` where source is ``"metadata"`` or ``"assumed"``.
    """
    recorded = run.mode(mode) if run else None
    if recorded is not None and recorded.gpus > 0:
        return recorded.gpus, "metadata"
    shape = parse_mode_name(mode)
    if shape is not None and shape.kind == "pd":
        return shape.gpus, "assumed"
    # The reference pd_intra runs put prefill and decode on one GH200.
    return (1, "assumed") if mode in ("agg", "pd_intra") else (2, "assumed")


def _role_gpus(mode: str, run: RunRecord | None, gpus: int) -> tuple[int, int]:
    """GPUs of the prefill and of the decode workers; agg does both on all of its GPUs."""
    recorded = run.mode(mode) if run else None
    topology = recorded.topology if recorded is not None else parse_mode_name(mode)
    if topology is None or topology.kind == "agg":
        return gpus, gpus
    return topology.prefill_gpus, topology.decode_gpus


def _slos(value: object) -> str | None:
    """The row's goodput targets as one label, e.g. ``ttft<=200 tpot<=20`` (None: none)."""
    if not isinstance(value, dict) or not value:
        return None
    return " ".join(f"{k}<={float(v):g}ms" for k, v in value.items()
                    if isinstance(v, int | float))  # fmt: skip


def is_simulated(server_info: object, run: RunRecord | None) -> bool:
    """True when the run record or any worker's server_info says the backend was simulated."""
    if run is not None and (run.simulated or _has_simulated_flag(run.servers, 3)):
        return True
    return _has_simulated_flag(server_info, 3)


def _has_simulated_flag(value: object, depth: int) -> bool:
    if depth < 0:
        return False
    if isinstance(value, dict):
        if value.get("simulated") is True:
            return True
        return any(_has_simulated_flag(v, depth - 1) for v in value.values())
    if isinstance(value, list):
        return any(_has_simulated_flag(v, depth - 1) for v in value)
    return False


def _prompt_counts(
    record: Mapping[str, Any],
    ctx: _FileContext,
    tag: str,
    workload: Workload,
    point: PointRecord | None,
) -> tuple[int, int]:
    """Return (requests sent, requests failed), from the best source the row has."""
    completed = int(record.get("completed") or 0)
    errors = record.get("errors")  # present with --output-details: one entry per request
    if isinstance(errors, list) and errors:
        return len(errors), sum(1 for e in errors if e)
    given = point.num_prompts if point and point.num_prompts is not None else (
        workload.num_prompts)
    match = _NUM_PROMPTS_RE.search(tag) or _NUM_PROMPTS_RE.search(ctx.path.stem)
    if given is not None:
        sent = given
    elif match:
        sent = int(match.group(1))
    else:
        sent = completed  # nothing says more were sent
    return sent, max(sent - completed, 0)


def _server_version(server_info: object) -> str | None:
    if not isinstance(server_info, dict):
        return None
    if isinstance(server_info.get("version"), str):
        return str(server_info["version"])
    for role in ("prefill", "decode"):
        workers = server_info.get(role)
        if isinstance(workers, list) and workers and isinstance(workers[0], dict):
            version = workers[0].get("version")
            return str(version) if version is not None else None
    return None


def _input_len(record: Mapping[str, Any]) -> float:
    # The client writes its random_* defaults even for other datasets: only random* use them.
    if str(record.get("dataset_name", "")).startswith("random"):
        return _float(record.get("random_input_len"))
    return math.nan


def _output_len(record: Mapping[str, Any]) -> float:
    if str(record.get("dataset_name", "")).startswith("random"):
        return _float(record.get("random_output_len"))
    return _float(record.get("sharegpt_output_len"))


def _float(value: object) -> float:
    """A number as float (inf kept), anything else (None, "trace") as NaN."""
    found = as_number(value)
    return math.nan if found is None else found


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as dicts keyed by column name."""
    return [{str(k): v for k, v in r.items()} for r in df.to_dict("records")]


def server_columns(workload: Workload, point: PointRecord | None,
                   metrics: PointMetrics | None) -> dict[str, Any]:
    """The ``SERVER_COLUMNS`` of one row (None where nothing was recorded)."""
    # A compare run's record, else (invoke bench keeps none) the point's line in the file.
    observed = point.observed if point and point.observed else (
        metrics.observed if metrics else None)
    flush = observed.cache_flush if observed else None
    late = observed.lateness if observed else None
    summary = summarize(metrics) if metrics is not None else None
    return {
        "workload_variant": workload.variant(),
        "cache_flushed": None if flush is None else flush.done,
        "flush_failed": ", ".join(flush.failed) if flush and flush.failed else None,
        "prefix_hit_rate": summary.prefix_hit_rate if summary else None,
        "kv_bootstrap_failed": summary.bootstrap_failed if summary else None,
        "kv_transfer_failed": summary.transfer_failed if summary else None,
        "metrics_error": summary.error if summary else None,
        "late_arrivals": late.arrivals if late else None,
        "late_overrun": late.overrun if late else None,
        "late_median_ms": late.median_ms if late else None,
        "late_gap_ms": late.mean_gap_ms if late else None,
    }  # fmt: skip

