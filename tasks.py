"""Invoke tasks: the original ``scripts/NN_*.sh`` steps, plus status, logs, down and compare.

Each task parses its arguments, loads the settings (``.env`` or $SGLBENCH_ENV_FILE, then the
environment, then ``--set KEY=VALUE``), calls one sglbench function and prints; the shared
machinery and the longer task bodies are ``sglbench.commands``. A user error is one line and a
non-zero exit (SGLBENCH_DEBUG=1 shows the traceback). ``invoke --list`` and
``invoke --help TASK`` describe every task and argument.

Each task imports the machinery it needs in its body: importing this file (every task's start)
stays light, so `invoke bench` starts the bench client a fraction of a second after launch.
"""

from __future__ import annotations

from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context

from sglbench import commands as cli
from sglbench.commands import Sets, load, sgl_task

DEMO_ENV = Path(__file__).parent / "examples" / "demo.env"

# --- setup and config --------------------------------------------------------------------------

@sgl_task()
def setup(c: Context, set_: Sets = None, dry_run: bool = False) -> None:
    """Control-host venv with the bench client, routers and plotting (same as `make setup`)."""
    command = f"make setup VENV={load(set_).settings.venv_dir}"
    if dry_run:
        print(command)
        return
    c.run(command)


@sgl_task(dry_run=False)
def config(c: Context, set_: Sets = None) -> None:
    """The effective settings and where each value came from (secrets masked)."""
    cli.console().print(cli.config_table(load(set_)))


# --- servers and router ------------------------------------------------------------------------

PULL_HELP = "docker runtime: pull SGLANG_IMAGE first (with progress) on the role's engine"


@sgl_task(pull=PULL_HELP)
def agg(c: Context, set_: Sets = None, dry_run: bool = False, pull: bool = False) -> None:
    """Aggregated server (sglang.launch_server ... --mem-fraction-static 0.9); waits until ready."""
    cli.up_role_task(load(set_).settings, "agg", dry_run=dry_run, pull=pull)


@sgl_task(pull=PULL_HELP)
def prefill(c: Context, set_: Sets = None, dry_run: bool = False, pull: bool = False) -> None:
    """Prefill server(s) (--disaggregation-mode prefill, bootstrap port); waits until ready."""
    cli.up_role_task(load(set_).settings, "prefill", dry_run=dry_run, pull=pull)


@sgl_task(pull=PULL_HELP)
def decode(c: Context, set_: Sets = None, dry_run: bool = False, pull: bool = False) -> None:
    """Decode server(s) (--disaggregation-mode decode); waits until ready."""
    cli.up_role_task(load(set_).settings, "decode", dry_run=dry_run, pull=pull)


@sgl_task(detach="run in the background and return once it routes to every worker")
def pd_router(
    c: Context, set_: Sets = None, dry_run: bool = False, detach: bool = False
) -> None:
    """PD router in front of prefill and decode; foreground (Ctrl-C stops it) unless --detach."""
    from sglbench.execute import deploy
    from sglbench.execute.runs import acquire
    from sglbench.plan.topology import from_settings

    settings = cli.in_allocation(load(set_).settings)  # Slurm: the workers' nodes
    if dry_run:
        cli.print_lines(deploy.describe_mode(settings, from_settings(settings, "pd"))[-1:])
        return
    run_id = deploy.new_run_id()
    acquire(settings, run_id, "invoke pd-router", [from_settings(settings, "pd")], ["router"])
    deploy.up_router(settings, detach=detach, run_id=run_id, console=cli.console())


# --- bench, plot, report -----------------------------------------------------------------------

@sgl_task(
    tag="names the results file results/TAG.jsonl and its rows",
    base_url="what to benchmark (default: the router if it answers, else the agg server)",
    mode="auto (detect PD from the router), agg or pd (--pd-separated)",
)
def bench(
    c: Context, tag: str, set_: Sets = None, dry_run: bool = False, base_url: str = "",
    mode: str = "auto",
) -> None:  # fmt: skip
    """SGLang's bench client with the BENCH_* workload; appends to RESULTS_DIR/TAG.jsonl."""
    from sglbench.execute.bench import run_bench

    path = run_bench(cli.in_allocation(load(set_).settings), tag=tag, base_url=base_url or None,
                     mode=cli.parse_bench_mode(mode), dry_run=dry_run,
                     console=cli.console())  # fmt: skip
    if not dry_run:
        print(f"results: {path}")


@sgl_task(
    path="a result file or directory (repeatable; default: RESULTS_DIR)",
    out="where the PNGs go (default: RESULTS_DIR)",
)
def plot(
    c: Context, path: Sets = None, out: str = "", set_: Sets = None,
    dry_run: bool = False,
) -> None:  # fmt: skip
    """Summary table (tag, throughput, mean E2E, mean TTFT) and the per-tag PNGs."""
    cli.plot_task(load(set_).settings, path, out, dry_run=dry_run)


@sgl_task(
    path="a result file, run directory or results directory (repeatable; default: RESULTS_DIR)",
    out="where report.md, report.html and the PNGs go (default: RESULTS_DIR/report)",
    force="compare modes even when their workloads differ (the report says so)",
)
def report(
    c: Context, path: Sets = None, out: str = "", force: bool = False,
    set_: Sets = None, dry_run: bool = False,
) -> None:  # fmt: skip
    """Markdown and HTML report: summary, ratios, Pareto plots, goodput, sanity findings."""
    cli.report_task(load(set_).settings, path, out, force, dry_run=dry_run)


# --- status, logs, down ------------------------------------------------------------------------

@sgl_task(dry_run=False)
def status(c: Context, set_: Sets = None) -> None:
    """What this project started and whether it still runs."""
    from sglbench.execute import deploy

    cli.console().print(cli.status_table(deploy.status(load(set_).settings)))


@sgl_task(
    dry_run=False,
    name="agg, prefill, decode, router, one worker such as decode-1, or job (Slurm: invoke submit)",
    follow="keep printing new lines until it stops (Ctrl-C ends)",
)
def logs(c: Context, name: str, follow: bool = False, set_: Sets = None) -> None:
    """The log of a server or the router."""
    cli.logs_task(load(set_).settings, name, follow=follow)


@sgl_task(run="only what run RUN started (a run id from `invoke status`)")
def down(c: Context, run: str = "", set_: Sets = None, dry_run: bool = False) -> None:
    """Stop exactly what this project started (pid files, container labels), router first."""
    cli.down_task(load(set_).settings, run_id=run, dry_run=dry_run)


# --- compare and demo --------------------------------------------------------------------------

@sgl_task(
    modes="comma-separated modes, in order: agg, pd (NUM_*/ *_TP workers; default agg,pd)",
    topologies="comma-separated topologies: agg, aggx2, 1p3d, 2p2d@tp2, 1p1d@tp2/1",
    gpus="a GPU budget N: agg xN and every PD split of N (equal budget)",
    resume="run id to continue: skips points already in results/<run-id>/",
    force="go on even if a resumed run's workload differs",
)
def compare(
    c: Context, modes: str | None = None, topologies: str = "", gpus: int = 0, resume: str = "",
    force: bool = False, set_: Sets = None, dry_run: bool = False,
) -> None:  # fmt: skip
    """Every topology with one workload: start, wait, bench (sweep), stop; then the summary."""
    run_dir = cli.compare_task(load(set_).settings, modes, resume, force, dry_run,
                               topologies=topologies, gpus=gpus)  # fmt: skip
    if run_dir is not None:
        print(f"run directory: {run_dir}")


@sgl_task(
    modes="as for compare", topologies="as for compare", gpus="as for compare",
    resume="as for compare", force="as for compare",
)
def submit(
    c: Context, modes: str | None = None, topologies: str = "", gpus: int = 0, resume: str = "",
    force: bool = False, set_: Sets = None, dry_run: bool = False,
) -> None:  # fmt: skip
    """Slurm, from a login node: `invoke compare` (same arguments) as an sbatch job; its id."""
    from sglbench.execute.slurm_jobs import compare_arguments

    cli.submit_task(load(set_).settings,
                    compare_arguments(modes, topologies, gpus, resume, force, set_),
                    modes=modes, topologies=topologies, gpus=gpus, dry_run=dry_run)


@sgl_task(
    path="a measured run directory or result file to fit (repeatable)",
    out="where the fitted profile goes (default: RESULTS_DIR/profiles/fitted.json)",
)
def calibrate(
    c: Context, path: Sets = None, out: str = "", set_: Sets = None, dry_run: bool = False,
) -> None:  # fmt: skip
    """Fit the simulator's profile to your runs; each point measured vs fitted, leave-one-out."""
    from sglbench.commands.whatif import calibrate_task

    calibrate_task(load(set_).settings, path, out, dry_run=dry_run)


@sgl_task(gpus="the GPU budget N to rank agg xN and every PD split of (default: COMPARE_GPUS)")
def predict(c: Context, gpus: int = 0, set_: Sets = None, dry_run: bool = False) -> None:
    """Rank the topologies of a GPU budget on the simulator (seconds, nothing launched)."""
    from sglbench.commands.whatif import predict_task

    run_dir = predict_task(load(set_).settings, gpus, dry_run=dry_run)
    if run_dir is not None:
        cli.report_task(load(set_).settings, [str(run_dir)], str(run_dir / "report"), False,
                        dry_run=False)  # fmt: skip


@sgl_task()
def demo(c: Context, set_: Sets = None, dry_run: bool = False) -> None:
    """`invoke compare` on the simulator with examples/demo.env (no GPU), then the report."""
    cli.demo_task(load(set_, env_file=DEMO_ENV).settings, dry_run=dry_run)


ns = Collection(setup, config, agg, prefill, decode, pd_router, bench, plot, report, status,
                calibrate, predict,
                logs, down, compare, submit, demo)  # fmt: skip
# Tasks print as they go; output is not captured.
ns.configure({"run": {"echo": True}})
