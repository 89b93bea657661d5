"""SGLang's admission and retraction rules, as pure functions over the engine's sequences.

From sglang 0.5.23 (the reference runs used 0.5.5/0.5.6, same rules and defaults):

* Admission (``managers/schedule_policy.py`` ``PrefillAdder``): a waiting request joins a prefill
  batch while ``extend + min(max_new_tokens, 4096) < free KV - offsets``, where every running
  request's offset is ``min(max_new_tokens - generated, 4096) * ratio``, ``ratio`` being 1 for
  ``ignore_eos`` requests (the bench client's default) and the scheduler's ``new_token_ratio``
  otherwise (``CLIP_MAX_NEW_TOKENS`` 4096). The batch's tokens are capped by
  ``chunked_prefill_size`` and ``max_prefill_tokens`` (16384); a prompt that does not fit is
  chunked, and the chunked request goes first in the next batch.
* ``new_token_ratio`` (``scheduler_components/new_token_ratio_tracker.py``, ``environ.py``):
  starts at ``0.7 * schedule_conservativeness``, decays by ``(init - 0.14 * init) / 600`` per
  decode step to ``0.14 * init``; after a retraction it becomes
  ``min(1, (decoded + 20 * n) / (sum of max_new_tokens + 1))`` over the requests kept.
* Retraction (``scheduler.py`` ``update_running_batch``, ``schedule_batch.py`` ``check_decode_mem``
  and ``retract_decode``): when the next decode step's one token per request does not fit in the
  KV pool, requests are retracted (KV freed, back to the waiting queue, recomputed later from
  prompt + output) in the order fewest output tokens first, longest prompt first among equals,
  until it fits; at least one is retracted, one is always kept.
* Prefill is preferred: the scheduler runs a prefill batch whenever it can form one, and decodes
  otherwise (``get_next_batch_to_run``); with ``--enable-mixed-chunk`` the decodes ride in the
  prefill batch (their tokens count against its budget).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sglbench.sim import timing
from sglbench.sim.profiles import Profile
from sglbench.sim.sequence import Seq

CLIP_MAX_NEW_TOKENS = 4096
INIT_NEW_TOKEN_RATIO = 0.7
MIN_NEW_TOKEN_RATIO_FACTOR = 0.14
NEW_TOKEN_RATIO_DECAY_STEPS = 600
RETRACT_DECODE_STEPS = 20


@dataclass
class NewTokenRatio:
    """The scheduler's estimate of how much of ``max_new_tokens`` a request will still use."""

    init: float
    minimum: float
    decay: float
    current: float

    @classmethod
    def for_conservativeness(cls, conservativeness: float) -> NewTokenRatio:
        """SGLang's tracker for ``--schedule-conservativeness``."""
        init = min(INIT_NEW_TOKEN_RATIO * conservativeness, 1.0)
        minimum = min(init * MIN_NEW_TOKEN_RATIO_FACTOR, 1.0)
        decay = (init - minimum) / NEW_TOKEN_RATIO_DECAY_STEPS
        return cls(init=init, minimum=minimum, decay=decay, current=init)

    def decay_step(self) -> None:
        """One decode step without retraction."""
        self.current = max(self.current - self.decay, self.minimum)

    def after_retract(self, kept: Sequence[Seq]) -> None:
        """Raise the estimate from what the kept requests really decoded."""
        decoded = sum(s.generated for s in kept)
        budget = sum(s.req.max_new_tokens for s in kept)
        self.current = min(1.0, (decoded + RETRACT_DECODE_STEPS * len(kept)) / (budget + 1))


def output_budget(seq: Seq, prefill_role: bool) -> int:
    """Output tokens the request may still need KV for (clipped as SGLang does)."""
    if prefill_role:
        return 1 if seq.generated == 0 else 0
    return min(max(seq.req.max_new_tokens - seq.generated, 0), CLIP_MAX_NEW_TOKENS)


def committed_tokens(running: Iterable[Seq], ratio: float, prefill_role: bool) -> float:
    """KV tokens the running requests hold or are expected to take (admission's offsets)."""
    total = 0.0
    for seq in running:
        r = 1.0 if seq.req.ignore_eos else ratio
        # A request still being chunked holds its whole fill (SGLang re-adds it every batch).
        held = seq.fill_len + seq.generated - seq.gen_at_fill
        total += held + output_budget(seq, prefill_role) * r
    return total


def admission_need(seq: Seq, prefill_role: bool) -> int:
    """KV tokens a waiting request must find free to be admitted (its fill + full output)."""
    return seq.fill_len + output_budget(seq, prefill_role)


def retraction_victims(decoding: Sequence[Seq], allocated: int, capacity: int) -> list[Seq]:
    """Requests to retract so that one more token per kept request fits (none if it fits)."""
    if allocated + len(decoding) <= capacity:
        return []
    keep = sorted(decoding, key=lambda s: (s.generated, -s.req.prompt_len), reverse=True)
    victims: list[Seq] = []
    while len(keep) > 1 and (not victims or allocated + len(keep) > capacity):
        seq = keep.pop()
        allocated -= seq.context
        victims.append(seq)
    return victims


def prefill_cost(
    profile: Profile, tp: int, chunks: Sequence[tuple[Seq, int]], decodes: Sequence[Seq]
) -> timing.PassCost:
    """Cost of a prefill pass over ``chunks`` (and mixed-in ``decodes``, one token each)."""
    tokens = sum(n for _, n in chunks) + len(decodes)
    prefix = sum(seq.prefilled for seq, _ in chunks) + sum(s.context for s in decodes)
    pairs = sum(n * (seq.prefilled + n / 2.0) for seq, n in chunks)
    pairs += sum(s.context for s in decodes)
    return timing.prefill_pass(profile, tp, tokens, len(chunks) + len(decodes), prefix, pairs)


def decode_cost(
    profile: Profile, tp: int, decoding: Sequence[Seq], graph_max_bs: int
) -> timing.PassCost:
    """Cost of one decode pass of ``decoding`` (CUDA graph up to ``graph_max_bs``)."""
    kv_read = sum(seq.context for seq in decoding)
    return timing.decode_pass(profile, tp, len(decoding), kv_read, graph_max_bs)
