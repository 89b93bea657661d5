"""``metadata.json`` of a run directory as pydantic models: run, modes, points, workload.

Execution builds and saves a ``RunRecord``; the results loader and the report load the same type.
Unknown keys are kept (``extra="allow"``) so a newer file read by an older reader loses nothing
when it is saved again. Files of the first layout (``modes`` as a list of names beside a
``gpus_per_mode`` map, no ``schema``) load into the same models. Every save goes through
``display.scrub``: no secret value reaches the file, even when a server echoed it back.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sglbench.display import scrub
from sglbench.errors import ResultsError
from sglbench.record.observation import Observation
from sglbench.types import ModeKind, PointPhase, PointStatus, Topology, parse_mode_name

METADATA_FILE = "metadata.json"
SCHEMA_VERSION = 2


def now() -> str:
    """The current time as records write it: ISO 8601 with the UTC offset, in seconds."""
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class Workload(_Record):
    """What every mode of a comparison must share (the run's fingerprint).

    The concurrency list is left out on purpose: it is the load axis, so a resumed run may add
    concurrency points to the same workload.
    """

    dataset: str | None = None
    dataset_path: str = ""
    num_prompts: int | None = None
    input_len: list[int] = Field(default_factory=list)
    output_len: list[int] = Field(default_factory=list)
    range_ratio: float | None = None
    seed: int | None = None
    ignore_eos: bool | None = None
    warmup: int | None = None
    request_rate: list[float] = Field(default_factory=list)
    # Issue 11's workloads: None unless the run sets them (``plan.workload.workload_details``).
    gsp_num_groups: int | None = None
    gsp_prompts_per_group: int | None = None
    gsp_system_prompt_len: int | None = None
    gsp_question_len: int | None = None
    gsp_output_len: int | None = None
    sharegpt_output_len: int | None = None
    trace_slowdown: float | None = None
    burstiness: float | None = None
    flush_cache: bool | None = None

    def diff(self, new: Workload) -> list[str]:
        """``key: old -> new`` for every field that differs."""
        return _diff(self.model_dump(), new.model_dump())

    def variant(self) -> str | None:
        """What sets this workload apart from plain random lengths, for people (None: nothing)."""
        parts = []
        if self.gsp_num_groups is not None:
            parts.append(f"shared prefix {self.gsp_num_groups}x{self.gsp_prompts_per_group} "
                         f"sys {self.gsp_system_prompt_len} q {self.gsp_question_len} "
                         f"out {self.gsp_output_len}")
        if self.sharegpt_output_len is not None:
            parts.append(f"sharegpt out {self.sharegpt_output_len}")
        if self.trace_slowdown is not None:
            parts.append(f"trace x{self.trace_slowdown:g}")
        if self.burstiness is not None:
            parts.append(f"burstiness {self.burstiness:g}")
        if self.flush_cache is False:
            parts.append("warm cache")
        return ", ".join(parts) or None


class ModeRecord(_Record):
    """One mode of a run: its name in files and tags, its topology, the GPUs it holds."""

    name: str  # agg, agg_x2, pd, pd_2p1d, pd_2p2d_tp2
    kind: ModeKind
    gpus: int
    agg: int = 0
    prefill: int = 0
    decode: int = 0
    agg_tp: int = 1
    prefill_tp: int = 1
    decode_tp: int = 1

    @classmethod
    def of(cls, topology: Topology) -> ModeRecord:
        """The record of a topology."""
        return cls(name=topology.name, kind=topology.kind, gpus=topology.gpus,
                   agg=topology.agg, prefill=topology.prefill, decode=topology.decode,
                   agg_tp=topology.agg_tp, prefill_tp=topology.prefill_tp,
                   decode_tp=topology.decode_tp)  # fmt: skip

    @property
    def topology(self) -> Topology:
        """The topology this mode deployed (a first-layout agg record: one server)."""
        return Topology(self.kind, max(self.agg, 1) if self.kind == "agg" else 0,
                        self.prefill, self.decode, self.agg_tp, self.prefill_tp,
                        self.decode_tp)  # fmt: skip


class PointRecord(_Record):
    """One measured (or failed) sweep point of a mode.

    ``started`` None: a row written just before an interrupt and adopted afterwards, whose client
    figures were never recorded. Execution fills every field; readers accept records that hold
    only some (hand-made or older files), so each field but the tag may be None.
    """

    tag: str
    mode: str | None = None
    label: str | None = None
    input_len: int | None = None
    output_len: int | None = None
    max_concurrency: int | None = None
    request_rate: float | None = None
    num_prompts: int | None = None
    status: PointStatus | None = None
    error: str | None = None
    client_cpu_cores: float | None = None
    client_cpu_phase: PointPhase | None = None
    client_limited: bool | None = None
    client_seconds: float | None = None
    host_cpu_busy: float | None = None
    started: str | None = None
    ended: str | None = None
    log: str = ""
    note: str | None = None
    # Per-role accounting at this point (InferenceX's way): the point's throughput divided by
    # the GPUs of the role that produced it; agg counts every GPU for both.
    gpus: int | None = None
    output_tok_s_per_decode_gpu: float | None = None
    input_tok_s_per_prefill_gpu: float | None = None
    total_tok_s_per_gpu: float | None = None
    tok_s_per_user: float | None = None  # 1000 / mean TPOT: one user's output speed
    slo_attainment: float | None = None  # share of requests meeting every SLO (the client's)
    capacity_search: bool = False  # a point of the SLO capacity search
    # Cache flush, client lateness and the server-metrics scrape of the point (issue 11).
    observed: Observation | None = None


class CapacityRecord(_Record):
    """The answer of one SLO capacity search: a topology's highest rate meeting the SLOs."""

    mode: str
    gpus: int
    input_len: int
    output_len: int
    rate: float | None  # req/s; None: not even the lowest rate tried met the target
    attainment: float | None
    above: float | None  # the lowest rate that missed it (None: none missed)
    points: int
    converged: bool
    slos_ms: dict[str, float]  # the client's goodput keys: ttft, tpot, e2el
    target_attainment: float
    done: bool  # False: interrupted before the search finished (resume goes on)


class WorkloadChange(_Record):
    """A resume that was forced although the workload or setup differed."""

    at: str
    changes: list[str]


class SlurmRecord(_Record):
    """Where a run's Slurm steps ran: the job, its nodes, each worker's node and GPUs."""

    job_id: str
    nodelist: str  # as Slurm writes it: sgl-n[1-2]
    nodes: list[str] = Field(default_factory=list)
    gpus_per_node: list[int] = Field(default_factory=list)  # the job's GPU gres (0: none)
    version: str | None = None  # srun --version
    container: str = "none"  # none, pyxis, apptainer
    image: str | None = None  # the container image (None: no container)
    # mode -> worker (prefill-0) -> {"node": ..., "gpus": "0"}
    placement: dict[str, dict[str, dict[str, str]]] = Field(default_factory=dict)
    batch_script: str | None = None  # the sbatch script of `invoke submit`, copied beside


class RunRecord(_Record):
    """The whole ``metadata.json`` of a run directory."""

    # 1: the first layout (no "schema" key); SCHEMA_VERSION: what this code writes.
    schema_: int = Field(1, alias="schema")
    run_id: str
    started: str | None = None
    ended: str | None = None
    simulated: bool = False
    predicted: bool = False  # invoke predict: the simulator on a virtual clock, nothing served
    modes: list[ModeRecord] = Field(default_factory=list)
    workload: Workload | None = None
    # What serves and measures the workload, keyed by settings key (BENCH_BACKEND, MODEL_PATH..).
    setup: dict[str, str | int | float | bool | None] | None = None
    settings: dict[str, str] = Field(default_factory=dict)  # secrets removed
    versions: dict[str, str | None] = Field(default_factory=dict)
    servers: dict[str, Any] = Field(default_factory=dict)  # worker -> its /server_info
    git_commit: str | None = None
    gpus: list[dict[str, str]] | str = "none"  # nvidia-smi of the control host
    # Why the topologies' GPU counts differ (None: an equal budget, or a single topology).
    unequal_budget: str | None = None
    forced_mismatch: bool = False
    workload_changes: list[WorkloadChange] = Field(default_factory=list)
    interrupted: bool = False
    resumed: list[str] = Field(default_factory=list)
    points: list[PointRecord] = Field(default_factory=list)
    capacity: list[CapacityRecord] = Field(default_factory=list)
    slurm: SlurmRecord | None = None  # None: no role ran on Slurm

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _first_layout(cls, data: Any) -> Any:
        """Files of the first layout: ``modes`` as names, GPUs in ``gpus_per_mode``."""
        if not isinstance(data, dict) or "gpus_per_mode" not in data:
            return data
        given = data.get("gpus_per_mode")
        gpus: dict[str, Any] = given if isinstance(given, dict) else {}
        listed = data.get("modes")
        names: list[Any] = listed if isinstance(listed, list) else list(gpus)
        modes = [_legacy_mode(m, gpus) if isinstance(m, str) else m for m in names]
        rest = {k: v for k, v in data.items() if k != "gpus_per_mode"}
        return {**rest, "modes": modes}

    def mode(self, name: str) -> ModeRecord | None:
        """The mode called ``name``, if the run has it."""
        return next((m for m in self.modes if m.name == name), None)

    def add_modes(self, modes: Sequence[ModeRecord]) -> None:
        """Add modes not yet in the run (a resume may bring new ones), in order."""
        for mode in modes:
            if self.mode(mode.name) is None:
                self.modes.append(mode)

    def point(self, tag: str) -> PointRecord | None:
        """The record of the point tagged ``tag`` (the newest, if the file holds several)."""
        return next((p for p in reversed(self.points) if p.tag == tag), None)

    def set_point(self, record: PointRecord) -> None:
        """Put a point's record in, replacing an older one of the same tag in its place."""
        for n, point in enumerate(self.points):
            if point.tag == record.tag:
                self.points[n] = record
                return
        self.points.append(record)

    def save(self, run_dir: Path, secrets: Sequence[str] = ()) -> Path:
        """Write ``metadata.json`` atomically (a reader never sees half a file), scrubbed."""
        path = run_dir / METADATA_FILE
        tmp = path.with_suffix(".json.tmp")
        data = scrub(self.model_dump(by_alias=True), secrets)
        # json (not pydantic's JSON mode) keeps inf as the `Infinity` the client writes too.
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord | None:
        """The record of ``run_dir``, or None when it has no ``metadata.json``.

        Raises:
            ResultsError: the file exists but is not a run record.
        """
        path = run_dir / METADATA_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ResultsError(f"{path}: unreadable run metadata ({exc}); re-run or delete it"
                               ) from exc  # fmt: skip
        if isinstance(data, dict):
            data.setdefault("run_id", run_dir.name)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"]) or "the top level"
            raise ResultsError(f"{path}: not a run record ({where}: {err['msg']}); re-run or "
                               "delete it") from None  # fmt: skip


def _legacy_mode(name: str, gpus: dict[str, Any]) -> dict[str, Any]:
    shape = parse_mode_name(name)
    given = gpus.get(name)
    if shape is None:
        count = given if isinstance(given, int) and given > 0 else 1
        return {"name": name, "kind": "pd" if name.startswith("pd") else "agg", "gpus": count}
    record = ModeRecord.of(shape).model_dump()
    if isinstance(given, int) and given > 0:
        record["gpus"] = given
    return record


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys
            if not _same(old.get(k), new.get(k))]  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def setup_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """``KEY: old -> new`` for every setup key that differs (an unknown old setup: none)."""
    return [] if old is None else _diff(old, new)
