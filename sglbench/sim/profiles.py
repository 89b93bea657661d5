"""Simulator profiles: one GPU, one model and the efficiency factors that tie them to reality.

A profile is data (``profiles/<name>.json``), not code, so a new GPU or model is a new file. The
physical numbers (HBM bandwidth, bf16 FLOP/s, memory, model shape) come from data sheets and the
model's ``config.json``; the efficiency factors and fixed overheads are fitted on real runs (see
``python -m sglbench.sim.calibrate``, ``benchmarks/sim_calibration.py``). A profile is named by a
shipped name or by the path of a JSON file (what ``calibrate`` writes). Units: GB/s and
TFLOP/s as vendors quote them (10^9, 10^12), ``memory_GB`` and ``reserved_memory_GB`` in GiB as
SGLang reports memory, times in ms.

Example:
    >>> profile = load_profile("gh200-qwen2.5-3b")
    >>> profile.gpu.hbm_bandwidth_GBps
    4000.0
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from sglbench.errors import ConfigError

# Defined in config (the leaf the harness imports); re-exported for the engine's callers.
from sglbench.sim.config import DEFAULT_PROFILE as DEFAULT_PROFILE
from sglbench.sim.config import PROFILE_NAMES as PROFILE_NAMES
from sglbench.sim.config import is_profile_path


@dataclass(frozen=True)
class GpuSpec:
    """One GPU as the timing model sees it.

    Attributes:
        name: Marketing name, shown in ``/server_info``.
        hbm_bandwidth_GBps: Peak HBM bandwidth in GB/s.
        bf16_tflops: Dense bf16 peak in TFLOP/s.
        memory_GB: Memory visible to the process, GiB.
        link_bandwidth_GBps: Bandwidth of the KV-transfer path between a prefill and a decode
            server (NVLink-C2C/IB/RDMA), GB/s.
    """

    name: str
    hbm_bandwidth_GBps: float
    bf16_tflops: float
    memory_GB: float
    link_bandwidth_GBps: float


@dataclass(frozen=True)
class ModelSpec:
    """The model shape that sets bytes and FLOPs per token (from its HF ``config.json``)."""

    name: str
    params_B: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_context: int
    dtype_bytes: int


@dataclass(frozen=True)
class Efficiency:
    """Fitted factors: how far the real stack is from the roofline, plus fixed costs.

    Attributes:
        bandwidth_eff: Fraction of peak HBM bandwidth a forward pass reaches.
        compute_eff: Fraction of peak bf16 FLOP/s a forward pass reaches.
        step_overhead_ms: Fixed cost of one decode forward (launch of the CUDA graph, sampling,
            scheduler bookkeeping not hidden by the overlap scheduler).
        per_seq_overhead_ms: Extra cost per running request in a decode forward.
        prefill_overhead_ms: Fixed cost of one prefill (extend) forward: it runs without CUDA
            graphs, so kernel launches dominate short prompts.
        per_prefill_req_overhead_ms: Extra cost per request in a prefill forward.
        kv_admit_overhead_ms: Cost a decode server pays in a step that admits transferred
            requests (allocating their KV slots).
        pd_decode_step_overhead_ms: Extra cost of every decode step on a PD decode server
            (polling KV receivers and its queues).
        request_latency_ms: Time from a request's arrival to the scheduler seeing it (HTTP,
            tokenizer process, IPC).
        handover_ms: Time SGLang's tokenizer process spends on one request; requests pass one
            at a time, so a burst of arrivals reaches the scheduler staggered.
        kv_transfer_latency_ms: Fixed latency of one KV transfer (handshake, polling).
        tp_allreduce_us: Latency of one all-reduce with tensor parallelism (two per layer).
        reserved_memory_GB: Memory kept for CUDA graphs and activations, GiB.
        jitter: Relative random variation of every step time (seeded), 0 for none.
        eager_overhead_ms: Kernel-launch time of a decode forward run eagerly (a batch above
            ``cuda_graph_max_bs``). Not seen in the reference runs (batches <= 128): a prior from
            36 layers x ~20 kernels x a few us per launch.
        sched_overhead_ms: Scheduler CPU time per iteration (overlapped with the GPU pass).
        sched_per_req_us: Scheduler CPU time per running request per iteration (overlapped):
            what caps a small model's decode at hundreds of running requests. A prior (about
            what SGLang's Python scheduler spends per request and step); the reference runs never
            make it the longer of CPU and GPU, so they cannot fit it.
        stream_us_per_token: CPU per streamed token of the server's output path (detokenizer,
            tokenizer manager, HTTP), a single-process FIFO after the GPU; 0: not modelled
            (the reference runs never come near its capacity).
        router_us_per_token: CPU per token a PD router spends forwarding a stream (a
            single-process FIFO shared by all streams): fitted on the reference PD runs, which
            went through the Python mini-lb; near 0 for the Rust routers.
    """

    bandwidth_eff: float
    compute_eff: float
    step_overhead_ms: float
    per_seq_overhead_ms: float
    prefill_overhead_ms: float
    per_prefill_req_overhead_ms: float
    kv_admit_overhead_ms: float
    pd_decode_step_overhead_ms: float
    request_latency_ms: float
    handover_ms: float
    kv_transfer_latency_ms: float
    tp_allreduce_us: float
    reserved_memory_GB: float
    jitter: float
    eager_overhead_ms: float = 3.0
    sched_overhead_ms: float = 0.5
    sched_per_req_us: float = 15.0
    stream_us_per_token: float = 0.0
    router_us_per_token: float = 0.0


@dataclass(frozen=True)
class Profile:
    """A named GPU + model + efficiency combination."""

    name: str
    description: str
    gpu: GpuSpec
    model: ModelSpec
    efficiency: Efficiency
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able view, e.g. for ``/server_info`` (and what a profile file holds)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "gpu": vars(self.gpu).copy(),
            "model": vars(self.model).copy(),
            "efficiency": vars(self.efficiency).copy(),
        }
        if self.provenance:
            out["provenance"] = self.provenance
        return out


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float)}
_T = TypeVar("_T", GpuSpec, ModelSpec, Efficiency)


def _section(cls: type[_T], raw: Any, where: str) -> _T:
    """Build one section, checking that every field is present with a number or string."""
    if not isinstance(raw, dict):
        raise ConfigError(f"sim profile {where}: expected an object")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING}
    missing = sorted(required - raw.keys())
    unknown = sorted(raw.keys() - names)
    if missing or unknown:
        raise ConfigError(f"sim profile {where}: missing keys {missing}, unknown keys {unknown}")
    for f in fields(cls):
        if f.name not in raw:
            continue
        value = raw[f.name]
        expected = _FIELD_TYPES[str(f.type)]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"sim profile {where}.{f.name}: expected {f.type}, got {value!r}")
    return cls(**raw)


def profile_from_dict(raw: dict[str, Any]) -> Profile:
    """Validate and build a profile from its JSON form.

    Raises:
        ConfigError: a key is missing, unknown or of the wrong type.
    """
    name = raw.get("name")
    if not isinstance(name, str):
        raise ConfigError("sim profile: 'name' must be a string")
    provenance = raw.get("provenance", {})
    if not isinstance(provenance, dict):
        raise ConfigError(f"sim profile {name}.provenance: expected an object")
    return Profile(
        name=name,
        description=str(raw.get("description", "")),
        gpu=_section(GpuSpec, raw.get("gpu"), f"{name}.gpu"),
        model=_section(ModelSpec, raw.get("model"), f"{name}.model"),
        efficiency=_section(Efficiency, raw.get("efficiency"), f"{name}.efficiency"),
        provenance=provenance,
    )


def load_profile(ref: str) -> Profile:
    """Load a profile by shipped name or from a JSON file.

    Args:
        ref: One of ``PROFILE_NAMES``, or the path of a profile file (e.g. one that
            ``python -m sglbench.sim.calibrate`` wrote).

    Raises:
        ConfigError: the name is unknown (the message lists the known ones), or the file is
            missing, not JSON, or not a valid profile.
    """
    if is_profile_path(ref):
        path = Path(ref).expanduser()
        try:
            raw = json.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"--sim-profile {ref}: cannot read it ({exc.strerror})") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"--sim-profile {ref}: not JSON ({exc.msg}, line {exc.lineno})"
            ) from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"--sim-profile {ref}: expected a JSON object")
        return profile_from_dict(raw)
    if ref not in PROFILE_NAMES:
        known = ", ".join(PROFILE_NAMES)
        raise ConfigError(
            f"--sim-profile {ref!r} is unknown; known: {known} (or the path of a profile .json)"
        )
    text = resources.files("sglbench.sim").joinpath("profiles", f"{ref}.json").read_text("utf-8")
    return profile_from_dict(json.loads(text))
