"""``GET /metrics``: SGLang's Prometheus metric names, filled from the engine's counters.

SGLang labels every series with ``model_name`` and ``engine_type`` (``unified``, ``prefill`` or
``decode``); the simulator does the same so dashboards and scrapers work unchanged.
"""

from __future__ import annotations

from sglbench.sim.config import Role
from sglbench.sim.engine import EngineStats

_ENGINE_TYPE: dict[Role, str] = {"null": "unified", "prefill": "prefill", "decode": "decode"}

# (name, type, help, value getter) in SGLang's names.
_GAUGES = (
    ("sglang:num_running_reqs", "The number of running requests.", "running"),
    ("sglang:num_queue_reqs", "The number of requests in the waiting queue.", "queued"),
    ("sglang:gen_throughput", "The generation throughput (token/s).", "last_gen_throughput"),
    ("sglang:num_used_tokens", "The number of used tokens.", "kv_tokens_used"),
    (
        "sglang:max_total_num_tokens",
        "Maximum total number of tokens in the KV cache.",
        "max_total_tokens",
    ),
)
_COUNTERS = (
    ("sglang:prompt_tokens_total", "Number of prefill tokens processed.", "prompt_tokens_total"),
    (
        "sglang:generation_tokens_total",
        "Number of generation tokens processed.",
        "generation_tokens_total",
    ),
    ("sglang:num_requests_total", "Number of requests processed.", "requests_total"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(stats: EngineStats, model_name: str, role: Role) -> str:
    """Prometheus text exposition (format 0.0.4) of the engine's counters.

    Args:
        stats: The engine's current counters.
        model_name: ``--served-model-name`` (or the model path).
        role: ``--disaggregation-mode``.
    """
    labels = f'model_name="{_escape(model_name)}",engine_type="{_ENGINE_TYPE[role]}"'
    usage = stats.kv_tokens_used / stats.max_total_tokens if stats.max_total_tokens else 0.0
    lines: list[str] = []
    for name, doc, attr in _GAUGES:
        lines += [
            f"# HELP {name} {doc}",
            f"# TYPE {name} gauge",
            f"{name}{{{labels}}} {float(getattr(stats, attr))}",
        ]
    lines += [
        "# HELP sglang:token_usage The token usage.",
        "# TYPE sglang:token_usage gauge",
        f"sglang:token_usage{{{labels}}} {usage}",
    ]
    for name, doc, attr in _COUNTERS:
        lines += [
            f"# HELP {name} {doc}",
            f"# TYPE {name} counter",
            f"{name}{{{labels}}} {float(getattr(stats, attr))}",
        ]
    return "\n".join(lines) + "\n"
