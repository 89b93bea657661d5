"""Pure builders: the sweep points of a run, their tags, and the workload they share.

A sweep is the cross product of the BENCH_* lists, measured BENCH_REPEATS times (the whole
sweep once, then again: drift over time shows in the spread). A point's tag names its result
row: ``<mode>_<label>`` in a compare run (``pd_in512_out128_c64_rinf``), ``TAG`` or
``TAG_<label>`` for ``invoke bench --tag TAG``; a repeat adds ``_rep<k>`` (k from 2). Repeats
use the same seed, so they send the same prompts: the spread is the serving system's run-to-run
noise, not the workload's.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sglbench.errors import ConfigError
from sglbench.plan.workload import workload_details
from sglbench.settings import Settings

if TYPE_CHECKING:  # pydantic models; only compare needs them (keep `invoke bench` quick)
    from sglbench.record.schema import Workload

_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


@dataclass(frozen=True)
class SweepPoint:
    """One workload point of a sweep."""

    input_len: int
    output_len: int
    max_concurrency: int
    request_rate: float
    repeat: int = 1
    capacity: bool = False  # a point of the SLO capacity search (its rate chosen by the search)

    @property
    def label(self) -> str:
        """Short stable name of the workload, e.g. ``in512_out128_c200_rinf``."""
        rate = "inf" if math.isinf(self.request_rate) else f"{self.request_rate:.4g}"
        cap = "_cap" if self.capacity else ""
        return f"in{self.input_len}_out{self.output_len}_c{self.max_concurrency}_r{rate}{cap}"

    @property
    def suffix(self) -> str:
        """What a repeat adds to the tag: ``""`` for the first, ``_rep2`` ... after."""
        return "" if self.repeat == 1 else f"_rep{self.repeat}"


def sweep_points(settings: Settings) -> list[SweepPoint]:
    """Cross product of BENCH_INPUT_LEN x BENCH_OUTPUT_LEN x BENCH_MAX_CONCURRENCY x RATE.

    Each point once per repeat, in first-seen order; the whole sweep, then its repeats.
    """
    product = itertools.product(
        settings.bench_input_len,
        settings.bench_output_len,
        settings.bench_max_concurrency,
        settings.bench_request_rate,
    )
    once = list(dict.fromkeys(SweepPoint(i, o, c, r) for i, o, c, r in product))
    return [replace(p, repeat=k) for k in range(1, settings.bench_repeats + 1) for p in once]


def point_tag(mode: str, point: SweepPoint) -> str:
    """The tag of a compare point's row: ``<mode>_<label>``."""
    return f"{mode}_{point.label}{point.suffix}"


def bench_tag(tag: str, point: SweepPoint, single: bool) -> str:
    """The tag of an ``invoke bench --tag`` row: ``tag`` for a lone point, else ``tag_<label>``."""
    return (tag if single else f"{tag}_{point.label}") + point.suffix


def check_tag(tag: str) -> None:
    """Tags name files: letters, digits and ``._+=-`` only.

    Raises:
        ConfigError: any other character.
    """
    if not _TAG_RE.match(tag):
        raise ConfigError(f"--tag {tag!r}: use letters, digits and . _ + = - only "
                          "(it names results/<tag>.jsonl)")


def workload_of(settings: Settings) -> Workload:
    """The workload every mode of a run shares (what a resume must not change)."""
    from sglbench.record.schema import Workload

    return Workload(
        dataset=settings.bench_dataset,
        dataset_path=settings.bench_dataset_path,
        num_prompts=settings.bench_num_prompts,
        input_len=list(settings.bench_input_len),
        output_len=list(settings.bench_output_len),
        range_ratio=settings.bench_range_ratio,
        seed=settings.bench_seed,
        ignore_eos=settings.bench_ignore_eos,
        warmup=settings.bench_warmup_requests,
        request_rate=list(settings.bench_request_rate),
        **workload_details(settings),  # GSP sizes, trace slowdown, burstiness, flush (issue 11)
    )


def setup_of(settings: Settings) -> dict[str, str | int | float | bool | None]:
    """What serves and measures the workload, keyed by settings key (a mismatch names it)."""
    return {
        "BENCH_BACKEND": settings.bench_backend,
        "MODEL_PATH": settings.model_path,
        "TOKENIZER_PATH": settings.tokenizer_path,
        "SIMULATE": settings.simulate,
        "SIM_PROFILE": settings.sim_profile,
        "ROUTER_IMPL": settings.router_impl,
    }
