#!/usr/bin/env python3
"""Plot benchmark results, as the original ``benchmarks/plot_benchmarks.py`` did.

Usage: ``python benchmarks/plot_benchmarks.py [RESULTS_DIR]`` (default: the RESULTS_DIR setting,
read as the invoke tasks read it: ``.env`` in the current directory or $SGLBENCH_ENV_FILE, then
the environment; a relative path is relative to the current directory). Prints the summary table
and writes ``throughput_by_tag.png`` and ``e2e_latency_by_tag.png`` into RESULTS_DIR.
``invoke plot`` does the same; ``invoke report`` writes the full report.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a plain script from a checkout: make the sglbench package importable.
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from sglbench.commands import load, os_error_line  # noqa: E402
from sglbench.errors import SglbenchError  # noqa: E402
from sglbench.report import plot_by_tag, print_summary  # noqa: E402
from sglbench.results.load import load_results  # noqa: E402


def main(argv: list[str]) -> int:
    """Print the summary table and write the two PNGs; return the exit code."""
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    # Piped output (CI logs, `| less`) gets a wide table instead of rich's 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        results_dir = Path(argv[0] if argv else load(None).settings.results_dir)
        df = load_results([results_dir])
        print_summary(df, console, title=f"Benchmark results in {results_dir}")
        target = results_dir if results_dir.is_dir() else results_dir.parent
        for path in plot_by_tag(df, target):
            console.print(f"Saved {path}")
    except SglbenchError as exc:
        _error(str(exc))
        return exc.exit_code
    except OSError as exc:  # an output directory under a file, no permission, ...
        _error(os_error_line(exc))
        return 1
    return 0


def _error(message: str) -> None:
    # markup=False: a path or a message with [brackets] prints as it is.
    print(f"error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
