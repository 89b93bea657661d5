"""Every metric name (and label value) the report reads exists in the installed packages.

Read from the installed files themselves, not from a copy: SGLang's Python sources for the
``sglang:`` names and the stage/mode label values, the routers' Rust binaries for ``smg_`` names.
A rename in a new SGLang or router release fails here instead of emptying the report.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import pytest

from sglbench.record.metrics import names_read
from sglbench.report.breakdown import AGG_SEGMENTS, PD_SEGMENTS
from sglbench.results.server import HIT_MODES


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds without importing the package
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def sglang_source() -> str:
    root = package_dir("sglang") / "srt"
    return "\n".join(p.read_text(encoding="utf-8", errors="replace")
                     for p in sorted((root / "observability").glob("*.py")))  # fmt: skip


@cache
def router_binaries() -> bytes:
    return b"".join(p.read_bytes() for name in ("smg", "sglang_router")
                    for p in package_dir(name).glob("*.so"))  # fmt: skip


@pytest.mark.parametrize("name", [n for n in names_read() if n.startswith("sglang:")])
def test_sglang_defines_the_metric(name: str) -> None:
    # Counters may be declared with or without the _total the exposition adds.
    declared = {f'name="{name}"', f'name="{name.removesuffix("_total")}"'}
    assert any(d in sglang_source() for d in declared), f"{name} not in sglang's collectors"


@pytest.mark.parametrize("name", [n for n in names_read() if n.startswith("smg_")])
def test_the_routers_export_the_metric(name: str) -> None:
    assert name.encode() in router_binaries(), f"{name} not in the smg/sglang-router binaries"


def test_every_stage_and_mode_label_value_exists() -> None:
    stages = {part[2] for _, parts in (*PD_SEGMENTS, *AGG_SEGMENTS) for part in parts if part[2]}
    stages |= {"decode_bootstrap", "decode_transferred"}  # the cross-check column
    source = (package_dir("sglang") / "srt" / "observability" / "req_time_stats.py").read_text()
    for stage in sorted(stages):
        assert f'"{stage}"' in source, f"stage {stage!r} not in sglang's req_time_stats.py"
    for mode in (*HIT_MODES, "input"):
        assert f'"{mode}"' in sglang_source(), f"prefill_effective_tokens mode {mode!r} missing"
