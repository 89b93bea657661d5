"""Per-role accounting of one point, as SemiAnalysis InferenceX divides disaggregated throughput.

Output tokens come from the decode GPUs and input tokens from the prefill GPUs, so PD's
throughput is divided per role; aggregated serving does both on every GPU. ``tok/s per user`` is
one user's output speed, 1000 / mean TPOT (mean ITL when the row has no TPOT).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sglbench.display import as_number
from sglbench.types import Topology


def per_gpu(row: Mapping[str, Any], topology: Topology) -> dict[str, float | None]:
    """Output tok/s per decode GPU, input tok/s per prefill GPU, total per GPU, tok/s per user."""
    agg = topology.kind == "agg"
    decode = topology.gpus if agg else topology.decode_gpus
    prefill = topology.gpus if agg else topology.prefill_gpus
    per_token = as_number(row.get("mean_tpot_ms")) or as_number(row.get("mean_itl_ms"))
    return {
        "output_tok_s_per_decode_gpu": _share(row.get("output_throughput"), decode),
        "input_tok_s_per_prefill_gpu": _share(row.get("input_throughput"), prefill),
        "total_tok_s_per_gpu": _share(row.get("total_throughput"), topology.gpus),
        "tok_s_per_user": 1000.0 / per_token if per_token else None,
    }


def _share(value: Any, gpus: int) -> float | None:
    found = as_number(value)
    return None if found is None or gpus <= 0 else found / gpus
