"""Pure builder: the modes a compare run measures, named as in its run directory."""

from __future__ import annotations

from collections.abc import Sequence

from sglbench.errors import ConfigError
from sglbench.record.schema import ModeRecord
from sglbench.settings import Settings
from sglbench.types import MODE_KINDS, mode_name


def run_modes(settings: Settings, modes: Sequence[str]) -> list[ModeRecord]:
    """The modes to run, in order (PD with several workers is ``pd_<x>p<y>d``).

    Raises:
        ConfigError: an unknown or repeated mode.
    """
    planned: list[ModeRecord] = []
    for mode in modes:
        if mode not in MODE_KINDS or any(p.kind == mode for p in planned):
            raise ConfigError(f"--modes: {mode!r} is unknown or repeated; expected agg, pd or "
                              "agg,pd")
        if mode == "agg":
            planned.append(ModeRecord(name="agg", kind="agg", gpus=1))
            continue
        p, d = settings.num_prefill, settings.num_decode
        planned.append(ModeRecord(name=mode_name("pd", p, d), kind="pd", gpus=p + d,
                                  prefill=p, decode=d))
    return planned
