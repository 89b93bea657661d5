"""The bodies of the tasks that do more than one call (the invoke tasks in ``tasks.py`` call
them): servers up, logs, down, compare and its verdict, submit, demo, plot, report."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sglbench.errors import ConfigError, ServerError
from sglbench.plan.topology import run_topologies
from sglbench.settings import Settings
from sglbench.types import Role

# The runtimes (docker SDK, httpx) and the results (pandas) are imported by the bodies that use
# them: `invoke bench` and `invoke plot` start without them.
if TYPE_CHECKING:
    from sglbench.results.checks import Finding

from sglbench.commands.machinery import (
    Sets,
    console,
    in_allocation,
    print_lines,
    result_inputs,
    split_modes,
)

# --- task bodies -------------------------------------------------------------------------------

def up_role_task(settings: Settings, role: Role, *, dry_run: bool, pull: bool) -> None:
    """``invoke agg|prefill|decode``: start every worker of ``role`` and wait until ready."""
    from sglbench.execute import deploy
    from sglbench.execute.runs import acquire
    from sglbench.execute.runtimes import check_start

    settings = in_allocation(settings)
    if dry_run:
        print_lines(deploy.describe_role(settings, role))
        return
    if pull:
        from sglbench.execute.docker_pull import pull_image

        pull_image(settings, console(), roles=[role])
    run_id = deploy.new_run_id()
    topology = settings.topology("agg" if role == "agg" else "pd")
    check_start(settings, [topology])
    acquire(settings, run_id, f"invoke {role}", [topology], [role])
    deploy.up_role(settings, role, run_id=run_id, console=console())


def logs_task(settings: Settings, name: str, *, follow: bool) -> None:
    """``invoke logs NAME``: its log; one line and exit 1 when there is none."""
    shown = 0
    for line in log_lines(settings, name, follow=follow):
        print(line, flush=follow)
        shown += 1
    if shown == 0:
        raise ServerError(f"logs {name}: no log of {name} here (it has not run with these "
                          f"settings: RUN_DIR={settings.run_dir}); `invoke status` lists what ran")


def down_task(settings: Settings, *, run_id: str = "", dry_run: bool) -> None:
    """``invoke down [--run ID]``: stop what we started, or what run ID started.

    ``--dry-run`` says what would be stopped. The runs stopped release what they held.
    """
    from sglbench.execute import deploy
    from sglbench.execute.runs import live_runs, release

    if not dry_run:
        if run_id and run_id not in live_runs(settings) and not any(
                i.run_id == run_id for i in deploy.status(settings)):
            raise ConfigError(f"--run {run_id}: no run of that id is known here; `invoke "
                              "status` lists the runs of what runs")
        deploy.down(settings, console(), run_id=run_id or None)
        if run_id:
            release(settings, run_id)
        else:
            live_runs(settings)  # drops the locks of runs that no longer run
        return
    for i in deploy.status(settings):
        if not run_id or i.run_id == run_id:
            print(f"would stop {i.name} ({i.runtime}, {i.where}, {i.shown_state})")


def compare_task(settings: Settings, modes: str | None, resume: str, force: bool, dry_run: bool,
                 *, topologies: str = "", gpus: int = 0, table: bool = True) -> Path | None:
    """``invoke compare``: run the topologies, or with ``dry_run`` print what would run.

    Args:
        settings: the run's settings.
        modes: ``--modes`` as typed (``agg,pd``); None when not given.
        resume: a run id to continue, or "".
        force: resume even when the workload differs.
        dry_run: print the servers, the router and every client command; run nothing.
        topologies: ``--topologies`` as typed (``aggx2,1p3d``); "" when not given.
        gpus: ``--gpus`` (a GPU budget); 0 when not given.
        table: print compare's per-point table at the end (demo prints its own summary).

    Returns:
        The run directory, or None for a dry run.
    """
    if gpus < 0:
        raise ConfigError(f"--gpus {gpus}: expected a GPU count of at least 1")
    mode_list = [] if modes is None else split_modes(modes)
    topology_list = split_modes(topologies) if topologies else []
    budget = gpus or None
    settings = in_allocation(settings)
    # compare imports the bench client machinery; keep `invoke --list` and the rest quick.
    from sglbench.execute import compare
    from sglbench.execute.runtimes import check_start

    if not dry_run:  # an allocation, nodes, a container tool: before anything is written
        check_start(settings, run_topologies(settings, modes=mode_list,
                                             topologies=topology_list, gpus=budget))
    if dry_run:
        print_lines(compare.describe_compare(settings, mode_list, resume or None, force,
                                             topologies=topology_list, gpus=budget))
        return None
    run_dir = compare.compare(settings, modes=mode_list, topologies=topology_list, gpus=budget,
                              resume=resume or None, force=force, console=console(),
                              table=table)  # fmt: skip
    print_verdict(settings, run_dir)
    return run_dir


def slo_args(settings: Settings) -> tuple[float | None, float | None, float]:
    """The report's SLOs: TTFT, the per-token target (TPOT or ITL) and the attainment share."""
    per_token = settings.bench_slo_tpot_ms or settings.bench_slo_itl_ms
    return settings.bench_slo_ttft_ms, per_token, settings.bench_slo_attainment


def print_verdict(settings: Settings, run_dir: Path) -> None:
    """The verdict of a run, in words (nothing when it measured one kind of topology only)."""
    from sglbench.report import verdict_lines

    ttft, per_token, attainment = slo_args(settings)
    lines = verdict_lines([run_dir], ttft, per_token, attainment)
    if lines:
        console().print("[bold]verdict[/bold]")
        for line in lines:
            console().print(line, markup=False, highlight=False)


def submit_task(settings: Settings, compare_args: Sequence[str], *, modes: str | None,
                topologies: str, gpus: int, dry_run: bool) -> None:
    """``invoke submit``: ``invoke compare COMPARE_ARGS`` as a batch job (``dry_run``: print
    the script); the script's path and the job id are printed.
    """
    from sglbench.execute import deploy, slurm_jobs


    plan = run_topologies(settings, modes=[] if modes is None else split_modes(modes),
                          topologies=split_modes(topologies) if topologies else [],
                          gpus=gpus or None)  # fmt: skip
    command = [sys.executable, "-m", "invoke", "compare", *compare_args]
    slurm_here = shutil.which("sbatch") is not None
    script, text = slurm_jobs.batch_job(settings, plan, command, Path.cwd(), deploy.new_run_id(),
                                        check_cluster=slurm_here or not dry_run)
    if dry_run:
        if not slurm_here:
            print("# sbatch not found here: the partition and its nodes are not checked")
        print(f"# would write {script} and submit it with sbatch --parsable:")
        print(text, end="")
        return
    job = slurm_jobs.submit_job(script, text)
    print(f"submitted job {job.job_id} ({job.name}): {job.script}")
    print("follow it with: invoke status; invoke logs job --follow; stop it: invoke down")


def log_lines(settings: Settings, name: str, *, follow: bool) -> Iterator[str]:
    """``invoke logs NAME``: a server or the router, or ``job``/``job-<id>`` (a submitted job)."""
    from sglbench.execute import deploy

    if name == "job" or (name.startswith("job-") and name[4:].isdigit()):
        from sglbench.execute.slurm_jobs import job_log_lines

        return job_log_lines(settings, name, follow=follow)
    return deploy.log_lines(settings, name, follow=follow)


def demo_task(settings: Settings, *, dry_run: bool) -> None:
    """``invoke demo``: compare the demo's topologies, then the summary and the report."""
    run_dir = compare_task(settings, None, "", False, dry_run, table=False)
    if run_dir is None:
        print(f"would write the report to {Path(settings.results_dir)}/<run-id>/report/")
        return
    from sglbench.report import build_report, print_summary
    from sglbench.results.load import load_results

    print_summary(load_results([run_dir]), console(), title="Demo: agg vs PD on the simulator")
    ttft, per_token, attainment = slo_args(settings)
    done = build_report([run_dir], run_dir / "report", ttft, per_token, False, attainment)
    print(f"report: {done.markdown}\nreport: {done.html}")
    for line in report_notes(done.findings, done.mismatches, done.simulated):
        print(line)


def plot_task(settings: Settings, paths: Sets, out: str, *, dry_run: bool) -> None:
    """``invoke plot``: the summary table, then the per-tag PNGs (``dry_run``: say which)."""
    inputs = result_inputs(settings, paths)
    out_dir = Path(out or settings.results_dir)
    if dry_run:
        print(f"would read {', '.join(map(str, inputs))}")
        print(f"would write {out_dir}/throughput_by_tag.png and e2e_latency_by_tag.png")
        return
    from sglbench.report import plot_by_tag, print_summary
    from sglbench.results.load import load_results

    df = load_results(inputs)
    print_summary(df, console())
    for png in plot_by_tag(df, out_dir):
        print(f"wrote {png}")


def report_task(settings: Settings, paths: Sets, out: str, force: bool, *,
                dry_run: bool) -> None:
    """``invoke report``: write report.md and report.html; say what they found."""
    inputs = result_inputs(settings, paths)
    out_dir = Path(out or Path(settings.results_dir) / "report")
    if dry_run:
        print(f"would write {out_dir}/report.md and report.html from {', '.join(map(str, inputs))}")
        return
    from sglbench.report import build_report

    ttft, per_token, attainment = slo_args(settings)
    done = build_report(inputs, out_dir, ttft, per_token, force, attainment)
    print(f"report: {done.markdown}\nreport: {done.html}")
    for line in report_notes(done.findings, done.mismatches, done.simulated):
        print(line)


def report_notes(findings: Sequence[Finding], mismatches: Sequence[str],
                 simulated: bool) -> list[str]:
    """What a report found, in a few lines: sanity findings by severity, mismatches, SIMULATED."""
    severities = [f.severity for f in findings]
    counts = ", ".join(f"{severities.count(s)} {s}" for s in dict.fromkeys(severities))
    lines = [f"sanity findings: {len(findings)}" + (f" ({counts}; listed in the report)"
                                                    if findings else "")]
    if mismatches:
        lines.append(f"workload mismatches: {len(mismatches)} (compared anyway: --force)")
    if simulated:
        lines.append("SIMULATED: numbers come from the sglbench simulator, not from GPUs")
    return lines
