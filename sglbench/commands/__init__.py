"""The command line behind ``tasks.py``: the task machinery and the longer task bodies.

``tasks.py`` declares each task (its name, arguments and help) and calls one function here, so a
task body stays a few lines.
"""

from sglbench.commands.bodies import (
    compare_task,
    demo_task,
    down_task,
    log_lines,
    logs_task,
    plot_task,
    print_verdict,
    report_notes,
    report_task,
    slo_args,
    submit_task,
    up_role_task,
)
from sglbench.commands.machinery import (
    COMMON_HELP,
    DEBUG_VAR,
    Sets,
    config_table,
    console,
    in_allocation,
    load,
    os_error_line,
    overrides,
    parse_bench_mode,
    print_lines,
    result_inputs,
    sgl_task,
    split_modes,
    status_table,
    user_errors,
)

__all__ = [
    "COMMON_HELP", "DEBUG_VAR", "Sets", "compare_task", "config_table", "console", "demo_task",
    "down_task", "in_allocation", "load", "log_lines", "logs_task", "os_error_line", "overrides",
    "parse_bench_mode", "plot_task", "print_lines", "print_verdict", "report_notes",
    "report_task", "result_inputs", "sgl_task", "slo_args", "split_modes", "status_table",
    "submit_task", "up_role_task", "user_errors",
]
