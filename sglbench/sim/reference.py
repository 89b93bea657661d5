"""The shipped profiles' calibration on the real runs of ``reference-results`` (GH200, A100).

Two fits, as the shipped profiles were made (``benchmarks/sim_calibration.py --loo``):

* ``gh200-qwen2.5-3b`` on the ``agg_*`` and ``pd_intra_*`` runs (one GH200; pd_intra: a
  prefill and a decode server sharing it, Mooncake over the local NIC).
* ``a100-qwen2.5-3b`` as the decode side of ``pd_1p*d`` (one GH200 prefill, x A100 decode
  servers, NIXL between the nodes), with the fitted GH200 profile as the prefill side. Its
  ``link_bandwidth_GBps`` is the KV path those runs had (about 0.1 GB/s: TCP-class, not RDMA).

The ``pd_inter_*`` runs (the same GH200 -> A100 pair at concurrency 8-32) are not fitted: they
are a check of the pair's profile on workloads it was not fitted to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sglbench.sim.calibrate import Calibration, calibrate, from_start
from sglbench.sim.points import Point, load_points
from sglbench.sim.profiles import Profile, load_profile

PREFILL_PROFILE = "gh200-qwen2.5-3b"
DECODE_PROFILE = "a100-qwen2.5-3b"


def reference_points(directory: Path) -> dict[str, list[Point]]:
    """The reference points by group: ``agg``, ``pd_intra``, ``pd_1pxd``, ``pd_inter``."""
    groups: dict[str, list[Point]] = {"agg": [], "pd_intra": [], "pd_1pxd": [], "pd_inter": []}
    for p in load_points([directory]):
        name = Path(p.source).name
        if name.startswith("pd_1p"):
            groups["pd_1pxd"].append(p)
        elif name.startswith("pd_inter"):
            groups["pd_inter"].append(p)
        elif p.family in groups:
            groups[p.family].append(p)
    return groups


def fit_reference(
    directory: Path,
    gh200: Profile | None = None,
    a100: Profile | None = None,
    *,
    loo: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[Calibration, Calibration]:
    """Fit GH200 on agg + pd_intra, then the A100 decode side on pd_1p*d (see module doc).

    By default each fit starts from the values the shipped profile's calibration started from
    (``provenance.start``), so that it reproduces the shipped profile and its errors.
    """
    groups = reference_points(directory)
    gh = calibrate(
        groups["agg"] + groups["pd_intra"], gh200 or from_start(load_profile(PREFILL_PROFILE)),
        loo=loo, progress=progress,
    )  # fmt: skip
    pair = calibrate(
        groups["pd_1pxd"], gh.profiles.main, a100 or from_start(load_profile(DECODE_PROFILE)),
        loo=loo, progress=progress,
    )  # fmt: skip
    return gh, pair
