"""Jobs spread over the cores by forked copies: each runs once, errors surface in the caller."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from sglbench.report.side_by_side import run_side_by_side, usable_cores


def write_pid(path: Path) -> None:
    path.write_text(str(os.getpid()))


def test_every_job_runs_once_and_all_cores_take_part(tmp_path: Path) -> None:
    files = [tmp_path / f"job{i}" for i in range(5)]
    run_side_by_side([functools.partial(write_pid, f) for f in files])
    pids = {int(f.read_text()) for f in files}  # every job wrote its file before the return
    assert os.getpid() in pids  # the caller runs a share itself
    if usable_cores() >= 2 and hasattr(os, "fork"):
        assert len(pids) == min(5, usable_cores())


def test_a_job_failing_in_a_copy_raises_its_error_here(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")

    def save_under_a_file() -> None:  # what a PNG under a non-directory gets
        (blocked / "plot.png").write_text("x")

    done = tmp_path / "done"
    with pytest.raises(NotADirectoryError):
        run_side_by_side([functools.partial(write_pid, done), save_under_a_file])
    assert done.is_file()
