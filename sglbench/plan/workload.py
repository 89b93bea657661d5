"""The workload beyond random lengths: its client flags, its fingerprint, and its up-front checks.

Datasets (BENCH_DATASET), all offline and the same for every mode:

* ``generated-shared-prefix``: ``--gsp-*`` sizes from the BENCH_GSP_* keys; needs only the
  tokenizer. The client caches the generated prompts in ``~/.cache/sglang/benchmark`` under a
  key that leaves out the tokenizer, so the client worker gets a private HOME per run
  (``sglbench.execute.bench``).
* ``sharegpt`` / ``random`` from a local JSON array (``BENCH_DATASET_PATH``), checked here: a
  path that is not valid JSON makes the client download ShareGPT instead, and a file with fewer
  two-turn conversations than BENCH_NUM_PROMPTS makes it send fewer requests without a word.
* ``mooncake``: trace replay from a local JSONL (``timestamp`` in ms, ``hash_ids``,
  ``output_length``), ``--use-trace-timestamps``, ``--mooncake-slowdown-factor``.

Long-context points are BENCH_INPUT_LEN values of 4k-32k; every point's longest request is
checked against the model's context up front (``model_context``). Reading a local config.json,
a simulator profile or a dataset file is the only I/O here; nothing reaches the network.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sglbench.settings import Settings
from sglbench.settings.workloads import GSP, gsp_prompts_per_group

# Files up to this size are parsed whole up front; a larger one only has its first byte checked
# (parsing ShareGPT's 670 MB would add seconds to every start).
PARSE_LIMIT_BYTES = 64 * 2**20
# Mooncake prompts: about 129 tokens per hash id plus the chat template (measured with Qwen's
# tokenizer: 1 id -> 151, 3 -> 409); the warm-up builds 513 tokens per id of the first row.
TRACE_TOKENS_PER_ID, TRACE_OVERHEAD, TRACE_WARMUP_PER_ID = 130, 40, 514
# SGLang's order of context keys in a HF config (ModelConfig._derive_context_length).
_CONTEXT_KEYS = ("max_sequence_length", "seq_length", "max_seq_len", "model_max_length",
                 "max_position_embeddings")  # fmt: skip
_EXTRA_KEYS = ("EXTRA_SERVER_ARGS", "AGG_EXTRA_ARGS", "PREFILL_EXTRA_ARGS", "DECODE_EXTRA_ARGS")


@dataclass(frozen=True)
class Context:
    """The model's context length and where it was found (for people)."""

    tokens: int
    source: str


def workload_args(settings: Settings) -> list[str]:
    """The client flags of the dataset, arrivals and cache report (after ``bench_args``' own)."""
    args: list[str] = []
    dataset = settings.bench_dataset
    if dataset == GSP:
        args += ["--gsp-num-groups", str(settings.bench_gsp_num_groups),
                 "--gsp-prompts-per-group", str(gsp_prompts_per_group(settings)),
                 "--gsp-system-prompt-len", str(settings.bench_gsp_system_prompt_len),
                 "--gsp-question-len", str(settings.bench_gsp_question_len),
                 "--gsp-output-len", str(settings.bench_gsp_output_len)]  # fmt: skip
    elif dataset == "sharegpt":
        if settings.bench_sharegpt_output_len is not None:
            args += ["--sharegpt-output-len", str(settings.bench_sharegpt_output_len)]
        context = model_context(settings)
        if context is not None:  # the client drops conversations that would not fit
            args += ["--sharegpt-context-len", str(context.tokens)]
    elif dataset == "mooncake":
        args += ["--mooncake-slowdown-factor", f"{settings.bench_trace_slowdown:g}",
                 "--use-trace-timestamps"]  # fmt: skip
    if not settings.bench_rust_client:  # the Rust client refuses both
        args.append("--cache-report")
        if settings.bench_flush_cache:
            # Our client worker does this flush on every worker (see execute.observe).
            args.append("--flush-cache")
    return args


def workload_details(settings: Settings) -> dict[str, Any]:
    """The fingerprint fields of ``record.schema.Workload`` this workload sets.

    Only what differs from a plain random run is set (the rest stays None), so a run recorded
    before these fields existed still matches the same settings on resume.
    """
    details: dict[str, Any] = {}
    dataset = settings.bench_dataset
    if dataset == GSP:
        details.update(gsp_num_groups=settings.bench_gsp_num_groups,
                       gsp_prompts_per_group=gsp_prompts_per_group(settings),
                       gsp_system_prompt_len=settings.bench_gsp_system_prompt_len,
                       gsp_question_len=settings.bench_gsp_question_len,
                       gsp_output_len=settings.bench_gsp_output_len)  # fmt: skip
    if dataset == "sharegpt" and settings.bench_sharegpt_output_len is not None:
        details["sharegpt_output_len"] = settings.bench_sharegpt_output_len
    if dataset == "mooncake":
        details["trace_slowdown"] = settings.bench_trace_slowdown
    if settings.bench_burstiness != 1.0:
        details["burstiness"] = settings.bench_burstiness
    if not settings.bench_flush_cache:
        details["flush_cache"] = False
    return details


def workload_notes(settings: Settings) -> list[str]:
    """``# note:`` lines a dry run prints: what the client's command line does not show.

    Only for what a user chose beyond the defaults; the flush of every worker at the client's
    ``--flush-cache`` moment is the module docstring of ``sglbench.execute.observe``.
    """
    notes = []
    if settings.bench_burstiness != 1.0:
        notes.append(f"# note: arrivals are gamma inter-arrival times of shape "
                     f"{settings.bench_burstiness:g} at each --request-rate, drawn by sglbench's "
                     "client worker (SGLang's client has no --burstiness)")
    if settings.bench_dataset == GSP:
        notes.append("# note: the client runs with a private HOME (its shared-prefix prompt "
                     "cache is keyed without the tokenizer)")
    return notes


# ---- the model's context ----------------------------------------------------------------------

def _context_from_args(settings: Settings) -> Context | None:
    values = settings.model_dump(by_alias=True)
    found: list[tuple[int, str]] = []
    for key in _EXTRA_KEYS:
        words = shlex.split(values[key])
        for i, word in enumerate(words):
            if word.startswith("--context-length"):
                value = word.split("=", 1)[1] if "=" in word else (words[i + 1:i + 2] or [""])[0]
                if value.isdigit():
                    found.append((int(value), key))
    if not found:
        return None
    tokens, key = min(found)
    return Context(tokens, f"--context-length in {key}")


def _context_from_profile(name: str) -> Context | None:
    # The profile is data (JSON): read as a file, the simulator's package is never imported.
    try:
        text = (Path(__file__).resolve().parents[1] / "sim" / "profiles" / f"{name}.json"
                ).read_text(encoding="utf-8")  # fmt: skip
        tokens = int(json.loads(text)["model"]["max_context"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Context(tokens, f"the simulator profile {name}")


def context_of_config(config: dict[str, Any]) -> int:
    """A HF ``config.json``'s context length as SGLang derives it (2048 when none is given)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    assert isinstance(text, dict)
    length = next((int(text[k]) for k in _CONTEXT_KEYS if isinstance(text.get(k), int)), 2048)
    rope = text.get("rope_scaling")
    if isinstance(rope, dict) and "original_max_position_embeddings" not in rope \
            and rope.get("rope_type", rope.get("type")) != "llama3":
        factor = rope.get("factor")
        if isinstance(factor, int | float) and factor > 1:
            length = int(length * factor)
    return length


def _config_file(settings: Settings) -> Path | None:
    local = Path(settings.model_path).expanduser()
    if local.is_dir():
        return local / "config.json" if (local / "config.json").is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(settings.model_path, "config.json")
    return Path(cached) if isinstance(cached, str) else None


def model_context(settings: Settings) -> Context | None:
    """The context the servers will have, or None when nothing here says.

    BENCH_MODEL_CONTEXT_LEN, else ``--context-length`` in the extra server args (the smallest),
    else the simulator profile when SIMULATE=true, else MODEL_PATH's config.json (a local
    directory, or the HF cache; never the network).
    """
    if settings.bench_model_context_len is not None:
        return Context(settings.bench_model_context_len, "BENCH_MODEL_CONTEXT_LEN")
    given = _context_from_args(settings)
    if given is not None:
        return given
    if settings.simulate:
        return _context_from_profile(settings.sim_profile)
    path = _config_file(settings)
    if path is None:
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Context(context_of_config(config), f"{path}") if isinstance(config, dict) else None
