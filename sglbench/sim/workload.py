"""The workload of one sweep point, drawn as SGLang's bench client draws it.

``python -m sglang.benchmark.serving --dataset-name random|random-ids`` (sglang 0.5.23,
``benchmark/datasets/common.py`` ``compute_random_lens``): after ``np.random.seed(seed)``, input
lengths are ``randint(max(int(L_in * r), 1), L_in + 1, n)`` then output lengths the same with
``L_out``; ``random-ids`` then draws ``n`` token offsets. Requests are sent in that order; with a
finite ``--request-rate`` each next one follows after ``np.random.exponential(1 / rate)``
seconds (``get_request``), and ``--max-concurrency`` holds a request until a slot is free.
The reference runs' client (0.5.5) drew outputs from ``[int(L_out * r), L_out]`` (0 included):
:func:`matching_draw` picks the variant whose token totals match a measured row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

QWEN_VOCAB = 151643  # tokenizer.vocab_size of the Qwen2 tokenizer: random-ids offsets


@dataclass(frozen=True)
class Workload:
    """One sweep point's workload (the bench client's flags).

    Attributes:
        num_prompts: ``--num-prompts``.
        input_len: ``--random-input-len``.
        output_len: ``--random-output-len``.
        range_ratio: ``--random-range-ratio``.
        max_concurrency: ``--max-concurrency`` (None: unlimited).
        request_rate: ``--request-rate`` (``inf``: all at once).
        seed: ``--seed``.
        dataset: ``random`` or ``random-ids`` (which draws consume the RNG before the arrivals).
        outputs_from_zero: The older client's output draw (``[int(L*r), L]``, 0 included).
    """

    num_prompts: int
    input_len: int
    output_len: int
    range_ratio: float = 0.0
    max_concurrency: int | None = None
    request_rate: float = math.inf
    seed: int = 1
    dataset: str = "random"
    outputs_from_zero: bool = False

    def __post_init__(self) -> None:
        if self.num_prompts < 1 or self.input_len < 1 or self.output_len < 0:
            raise ValueError(f"workload needs num_prompts, input_len >= 1: {self}")
        if not 0.0 <= self.range_ratio <= 1.0:
            raise ValueError(f"range_ratio must be in [0, 1], got {self.range_ratio}")
        if self.request_rate <= 0:
            raise ValueError(f"request_rate must be > 0, got {self.request_rate}")


def _lens(rng: np.random.RandomState, full: int, ratio: float, n: int, low: int) -> list[int]:
    if full <= 0:
        return [0] * n
    return [int(x) for x in rng.randint(max(int(full * ratio), low), full + 1, size=n)]


def draw(w: Workload) -> tuple[list[tuple[int, int]], list[float]]:
    """(input, output) lengths and send offsets (seconds from the start) of every request."""
    rng = np.random.RandomState(w.seed)
    inputs = _lens(rng, w.input_len, w.range_ratio, w.num_prompts, 1)
    outputs = _lens(
        rng, w.output_len, w.range_ratio, w.num_prompts, 0 if w.outputs_from_zero else 1
    )
    if w.dataset == "random-ids":
        rng.randint(0, QWEN_VOCAB, size=w.num_prompts)
    offsets = [0.0] * w.num_prompts
    if math.isfinite(w.request_rate):
        t = 0.0
        for i in range(w.num_prompts):
            offsets[i] = t
            t += float(rng.exponential(1.0 / w.request_rate))
    return list(zip(inputs, outputs, strict=True)), offsets


def matching_draw(w: Workload, total_input: int | None, total_output: int | None) -> Workload:
    """The draw variant whose token totals equal a measured row's (default: the current one)."""
    for candidate in (w, replace(w, outputs_from_zero=not w.outputs_from_zero)):
        lengths, _ = draw(candidate)
        ins = sum(i for i, _ in lengths)
        outs = sum(o for _, o in lengths)
        if (total_input in (None, ins)) and (total_output in (None, outs)):
            return candidate
    return w
