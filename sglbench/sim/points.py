"""Measured sweep points: bench-client JSONL rows, with the topology and workload that made them.

A path is a JSONL file or a directory of them (a run). Every line is one point. The topology
comes from an optional ``metadata.json`` beside the file (``{"topology": "1p3d"}``), else from
the file name or the row's ``tag``: ``agg``, ``aggxN``, ``pd_intra``, ``pd_inter`` (one prefill,
one decode on another node: ``1p1d``), ``pd_XpYd`` / ``XpYd``. The workload is the row's own
(``random_input_len``, ``random_output_len``, ``random_range_ratio``, ``max_concurrency``,
``request_rate``, ``completed`` prompts); the seed is metadata's ``seed``, else the first of 1,
42 (the client's default) and 0 whose draws give the row's token totals.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sglbench.errors import ConfigError
from sglbench.sim.workload import Workload, draw, matching_draw

METRICS = ("output_throughput", "mean_itl_ms", "mean_ttft_ms")
_TOPOLOGY = re.compile(r"^(?:pd_)?(agg(?:_?x\d+)?|intra|inter|\d+p\d+d)(?:_|$)")
_SEEDS = (1, 42, 0)


@dataclass(frozen=True)
class Point:
    """One measured point.

    Attributes:
        tag: The row's tag (or the file name).
        source: File it came from.
        topology: ``agg``, ``aggxN``, ``pd_intra``, ``XpYd``.
        workload: What the bench client sent.
        measured: Every numeric field of the row.
    """

    tag: str
    source: str
    topology: str
    workload: Workload
    measured: dict[str, float]

    @property
    def family(self) -> str:
        """``agg``, ``pd_intra`` or ``pd`` (xPyD): what the calibration fits separately."""
        if self.topology.startswith("agg"):
            return "agg"
        return "pd_intra" if self.topology == "pd_intra" else "pd"


def topology_name(text: str) -> str | None:
    """The topology named at the start of a file name or tag, if any."""
    m = _TOPOLOGY.match(text)
    if not m:
        # The harness names 1P1D plainly "pd" (its file pd.jsonl, its tags pd_in512_...).
        return "1p1d" if text == "pd" or text.startswith("pd_in") else None
    name = m.group(1).replace("_x", "x")  # agg_x2: the harness's name of aggx2
    return {"intra": "pd_intra", "inter": "1p1d"}.get(name, name)


def _run_mode(meta: dict[str, Any], stem: str) -> str | None:
    """The topology of ``stem`` in a harness run's metadata.json (its ``modes`` list)."""
    for mode in meta.get("modes") or []:
        if not isinstance(mode, dict) or mode.get("name") != stem:
            continue
        if mode.get("kind") == "agg":
            count = int(mode.get("agg") or 1)
            return "agg" if count == 1 else f"aggx{count}"
        return f"{int(mode.get('prefill') or 1)}p{int(mode.get('decode') or 1)}d"
    return None


def _metadata(path: Path) -> dict[str, Any]:
    meta = path.parent / "metadata.json"
    if not meta.is_file():
        return {}
    try:
        raw = json.loads(meta.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta}: not JSON ({exc.msg}); fix or remove it") from exc
    return raw if isinstance(raw, dict) else {}


def _number(row: dict[str, Any], key: str, where: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: the row has no number {key!r}; is it a bench-client row?")
    try:
        return float(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key}={value!r} is not a number") from exc


def _workload(row: dict[str, Any], meta: dict[str, Any], where: str) -> Workload:
    conc = row.get("max_concurrency")
    rate = _number(row, "request_rate", where) if row.get("request_rate") is not None else math.inf
    base = Workload(
        num_prompts=int(_number(row, "completed", where)),
        input_len=int(_number(row, "random_input_len", where)),
        output_len=int(_number(row, "random_output_len", where)),
        range_ratio=float(row.get("random_range_ratio") or 0.0),
        max_concurrency=int(conc) if conc not in (None, "None") else None,
        request_rate=rate,
        dataset=str(row.get("dataset_name") or "random"),
    )
    ins, outs = row.get("total_input_tokens"), row.get("total_output_tokens")
    seeds = (int(meta["seed"]),) if isinstance(meta.get("seed"), int) else _SEEDS
    for seed in seeds:
        candidate = matching_draw(Workload(**{**vars(base), "seed": seed}), ins, outs)
        lengths, _ = draw(candidate)
        if ins is None or sum(i for i, _ in lengths) == ins:
            return candidate
    return Workload(**{**vars(base), "seed": seeds[0]})


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.jsonl") if p.is_file() and _is_rows(p))
    if path.is_file():
        return [path]
    raise ConfigError(f"--path {path}: no such file or directory")


def _is_rows(path: Path) -> bool:
    """In a harness run directory only its modes' files hold result rows (not metrics.jsonl,
    not the <mode>.failed.jsonl of points whose requests failed)."""
    modes = _metadata(path).get("modes")
    if not isinstance(modes, list):
        return True
    names = {m.get("name") if isinstance(m, dict) else m for m in modes}
    return path.stem in names


def load_points(paths: list[Path]) -> list[Point]:
    """Every point of the JSONL files under ``paths``.

    Raises:
        ConfigError: a path is missing, a line is not JSON, or no topology can be told.
    """
    points: list[Point] = []
    for path in paths:
        for file in _files(path):
            meta = _metadata(file)
            for n, line in enumerate(file.read_text("utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                where = f"{file}:{n}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{where}: not JSON ({exc.msg})") from exc
                tag = str(row.get("tag") or file.stem)
                topo = (meta.get("topology") or _run_mode(meta, file.stem)
                        or topology_name(file.stem) or topology_name(tag))
                if not isinstance(topo, str):
                    raise ConfigError(
                        f"{where}: cannot tell the topology; name the file agg_*, pd_intra_*,"
                        ' pd_1p2d_*, ... or put {"topology": "1p2d"} in a metadata.json beside it'
                    )
                measured = {
                    k: float(v)
                    for k, v in row.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                points.append(Point(tag, str(file), topo, _workload(row, meta, where), measured))
    if not points:
        raise ConfigError(f"--path {' '.join(map(str, paths))}: no bench-client rows found")
    return points
