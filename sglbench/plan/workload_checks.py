"""Up-front checks of a workload that read files: one ``ConfigError`` line, nothing started.

A missing or unreadable local dataset, a file the client would silently replace by a download
or read fewer requests from than asked, and a request longer than the model's context (SGLang
answers those with HTTP 400 mid-run, or fails the warm-up) are refused before any server starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sglbench.errors import ConfigError
from sglbench.plan.sweep import sweep_points
from sglbench.plan.workload import (
    PARSE_LIMIT_BYTES,
    TRACE_OVERHEAD,
    TRACE_TOKENS_PER_ID,
    TRACE_WARMUP_PER_ID,
    Context,
    model_context,
)
from sglbench.settings import Settings
from sglbench.settings.workloads import GSP

_KEY = "BENCH_DATASET_PATH"


def check_workload(settings: Settings) -> Context | None:
    """Check the dataset file and every point's lengths; return the context used (or None).

    Raises:
        ConfigError: naming the key, what is wrong and what to do.
    """
    dataset = settings.bench_dataset
    path = settings.bench_dataset_path
    trace: list[dict[str, Any]] = []
    if path and dataset in ("random", "sharegpt"):
        _check_conversations(Path(path).expanduser(), settings)
    elif dataset == "mooncake":
        trace = read_trace(Path(path).expanduser(), settings.bench_num_prompts)
    context = model_context(settings)
    if context is not None:
        _check_lengths(settings, context, trace)
    return context


def _open(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"{_KEY}={str(path)!r}: no such file; give a local dataset file")
    try:
        if path.stat().st_size > PARSE_LIMIT_BYTES:
            with path.open(encoding="utf-8") as f:
                return f.read(4096)
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{_KEY}={str(path)!r}: cannot read it ({exc}); give a readable "
                          "UTF-8 file") from None


def _check_conversations(path: Path, settings: Settings) -> None:
    """A ShareGPT-style JSON array with at least BENCH_NUM_PROMPTS two-turn conversations."""
    text = _open(path)
    if not text.lstrip().startswith("["):
        raise ConfigError(f"{_KEY}={str(path)!r}: not a JSON array; the client would download "
                          "ShareGPT instead; give a ShareGPT-style JSON list of conversations")
    if path.stat().st_size > PARSE_LIMIT_BYTES:
        return
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{_KEY}={str(path)!r}: invalid JSON ({exc}); the client would "
                          "download ShareGPT instead; fix the file") from None
    usable = sum(1 for item in data if isinstance(item, dict) and len(
        item.get("conversations", item.get("conversation", [])) or []) >= 2)
    if usable < settings.bench_num_prompts:
        raise ConfigError(f"{_KEY}={str(path)!r}: {usable} conversations with two turns, "
                          f"BENCH_NUM_PROMPTS={settings.bench_num_prompts}: the client would "
                          f"send only {usable}; lower BENCH_NUM_PROMPTS or give a larger file")


def read_trace(path: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` records of a mooncake trace (what the client replays).

    Raises:
        ConfigError: no file, a line that is not a JSON object with a numeric ``timestamp``,
            or fewer lines than ``count``.
    """
    lines = [line for line in _open(path).splitlines() if line.strip()]
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines[:count], start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("timestamp"), int | float):
            raise ConfigError(f"{_KEY}={str(path)!r} line {number}: not a trace record; each "
                              'line is a JSON object like {"timestamp": 0, "hash_ids": [1, 2], '
                              '"output_length": 64}')
        records.append(record)
    if len(records) < count:
        raise ConfigError(f"{_KEY}={str(path)!r}: {len(records)} trace records, "
                          f"BENCH_NUM_PROMPTS={count}: the client replays the first "
                          f"BENCH_NUM_PROMPTS lines; lower BENCH_NUM_PROMPTS to {len(records)}")
    return records


def _over(context: Context, what: str, tokens: int, fix: str) -> ConfigError:
    return ConfigError(f"{what} = {tokens} tokens per request, over the model's context of "
                       f"{context.tokens} (from {context.source}); {fix}, or set "
                       "BENCH_MODEL_CONTEXT_LEN if the servers run a longer context")


def _check_lengths(s: Settings, context: Context, trace: list[dict[str, Any]]) -> None:
    if s.bench_dataset.startswith("random"):
        for point in sweep_points(s):
            tokens = point.input_len + point.output_len
            if tokens > context.tokens:
                raise _over(context, f"BENCH_INPUT_LEN={point.input_len} + BENCH_OUTPUT_LEN="
                            f"{point.output_len}", tokens, "lower them")
    elif s.bench_dataset == GSP:
        tokens = s.bench_gsp_system_prompt_len + s.bench_gsp_question_len + s.bench_gsp_output_len
        if tokens > context.tokens:
            raise _over(context, "BENCH_GSP_SYSTEM_PROMPT_LEN + BENCH_GSP_QUESTION_LEN + "
                        "BENCH_GSP_OUTPUT_LEN", tokens, "lower them")
    elif s.bench_dataset == "sharegpt" and s.bench_sharegpt_output_len is not None:
        if s.bench_sharegpt_output_len >= context.tokens:
            raise _over(context, "BENCH_SHAREGPT_OUTPUT_LEN", s.bench_sharegpt_output_len,
                        "lower it")
    elif trace:
        _check_trace_lengths(context, trace)


def _check_trace_lengths(context: Context, trace: list[dict[str, Any]]) -> None:
    for number, record in enumerate(trace, start=1):
        ids, out = len(record.get("hash_ids") or []), int(record.get("output_length", 256))
        tokens = TRACE_TOKENS_PER_ID * ids + TRACE_OVERHEAD + out
        if tokens > context.tokens:
            raise _over(context, f"trace line {number} ({ids} hash ids, output_length {out}): "
                        "about", tokens, "shorten that record")
    first = trace[0]
    warmup = (TRACE_WARMUP_PER_ID * len(first.get("hash_ids") or []) + TRACE_OVERHEAD
              + min(int(first.get("output_length", 32)), 32))  # fmt: skip
    if warmup > context.tokens:
        raise _over(context, "the client's warm-up from trace line 1 (513 tokens per hash id): "
                    "about", warmup, "start the trace with a shorter record")
