"""The summary table of results, as a DataFrame and as a rich table for the terminal."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from sglbench.display import amount

SUMMARY_COLUMNS = {
    "tag": "tag",
    "mode": "mode",
    "max_concurrency": "conc",
    "output_throughput": "output tok/s",
    "total_throughput": "total tok/s",
    "mean_ttft_ms": "mean TTFT ms",
    "mean_e2e_ms": "mean E2E ms",
    "request_throughput": "req/s",
    "simulated": "simulated",
}


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per result row: tag, mode, throughputs, mean TTFT and E2E (as the original plot).

    Rows are sorted by run, mode, workload and concurrency so sweeps read top to bottom.
    Values are the file's own numbers, unrounded.
    """
    order = ["run_id", "mode", "input_len", "output_len", "num_prompts", "max_concurrency", "tag"]
    ordered = df.sort_values(order, na_position="first", kind="stable")
    return ordered[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def print_summary(df: pd.DataFrame, console: Console, title: str = "Benchmark summary") -> None:
    """Print ``summary_table(df)`` as a rich table, noting simulated numbers below it."""
    table = Table(title=title, header_style="bold cyan")
    summary = summary_table(df)
    for column, label in SUMMARY_COLUMNS.items():
        if column != "simulated":
            text = column in ("tag", "mode")
            table.add_column(label, justify="left" if text else "right", overflow="fold")
    for row in summary.to_dict("records"):
        cells = [amount(row[c]) for c in SUMMARY_COLUMNS if c != "simulated"]
        style = "yellow" if row["simulated"] else None
        table.add_row(*cells, style=style)
    console.print(table)
    simulated = int(summary["simulated"].sum())
    if simulated:
        console.print(
            f"[yellow]{simulated} of {len(summary)} rows are SIMULATED (sglbench.sim), "
            "not GPU measurements.[/yellow]"
        )
