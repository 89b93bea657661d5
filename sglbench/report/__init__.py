"""Report stage: summary tables, plots and the Markdown/HTML report built from result files.

``invoke plot`` uses ``summary_table``/``print_summary`` and ``plot_by_tag``; ``invoke report``
uses ``build_report``. Everything here reads result files only (see ``sglbench.results``).
"""

from sglbench.report.build import ReportPaths, build_report, verdict_lines
from sglbench.report.plots import plot_by_tag
from sglbench.report.tables import print_summary, summary_table

__all__ = ["ReportPaths", "build_report", "plot_by_tag", "print_summary", "summary_table",
           "verdict_lines"]
