"""The bench client's JSONL result files: one reader, one tag index, one repair.

The client appends one JSON object per line (``request_rate`` may be the bare token ``Infinity``,
which Python's json reads). A line is a result row when it is an object with the keys every client
version writes (``REQUIRED_KEYS``). Two policies, chosen by the caller:

* ``strict`` (the results loader, the report): a line that is not a result row is a
  ``ResultsError`` naming file:line.
* lenient (execution: finding finished points, rows a point appended): every JSON object counts,
  anything else is skipped; a run interrupted mid-write must never stop the next one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sglbench.errors import ResultsError

REQUIRED_KEYS = ("completed", "duration", "output_throughput", "mean_ttft_ms",
                 "mean_e2e_latency_ms")  # fmt: skip
Row = dict[str, Any]


def read_rows(path: Path, *, strict: bool, offset: int = 0) -> list[tuple[int, Row]]:
    """The result rows of ``path`` as (line number, row), from byte ``offset`` on.

    Args:
        path: a JSONL file; a missing file has no rows (lenient) or is an error (strict).
        strict: raise on a line that is not a result row, instead of skipping it.
        offset: start reading here (line numbers then count from the offset).

    Raises:
        ResultsError: strict, and the file cannot be read or a line is not a result row.
    """
    return list(_rows(path, strict=strict, offset=offset))


def _rows(path: Path, *, strict: bool, offset: int) -> Iterator[tuple[int, Row]]:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError as exc:
        if strict:
            raise ResultsError(f"{path}: cannot read ({exc.strerror}); check the path") from exc
        return
    try:
        text = data.decode("utf-8", errors="strict" if strict else "replace")
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 text ({exc.reason}); re-run the benchmark") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row, why = _parse(line, strict)
        if row is not None:
            yield lineno, row
        elif strict:
            raise ResultsError(f"{path}:{lineno}: {why}; remove the line or re-run the benchmark")


def _parse(line: str, strict: bool) -> tuple[Row | None, str]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, "not a bench_serving result row (not a JSON object)"
    missing = [k for k in REQUIRED_KEYS if k not in value] if strict else []
    if missing:
        return None, f"not a bench_serving result row (no {missing[0]!r})"
    return value, ""


def tags(path: Path) -> set[str]:
    """Tags that already have a result row in ``path`` (bad lines skipped)."""
    return {str(row["tag"]) for _, row in read_rows(path, strict=False)
            if isinstance(row.get("tag"), str)}  # fmt: skip


def size(path: Path) -> int:
    """Bytes in the file so far (0 when it does not exist yet): where the next row will start."""
    return path.stat().st_size if path.exists() else 0


def repair(path: Path) -> bool:
    """Drop a last line cut short by a kill (no newline), so appended rows stay parseable.

    Returns:
        True when something was dropped.
    """
    if not path.exists() or path.stat().st_size == 0:
        return False
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return False
    path.write_bytes(data[: data.rfind(b"\n") + 1])
    return True


def set_aside(path: Path, tag: str, aside: Path) -> int:
    """Move the rows tagged ``tag`` from ``path`` to the end of ``aside``; return how many.

    A point whose requests failed keeps its row (nothing is lost), but out of the results file:
    the report never averages it in, and a resume measures the point again.
    """
    if not path.exists():
        return 0
    keep: list[str] = []
    moved: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        row, _ = _parse(line, strict=False)
        (moved if row is not None and row.get("tag") == tag else keep).append(line)
    if moved:
        with aside.open("a", encoding="utf-8") as out:
            out.writelines(moved)
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        os.replace(tmp, path)
    return len(moved)
