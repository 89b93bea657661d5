"""The ``slurm`` runtime: servers as job steps of the allocation the harness runs in.

Each server is one ``srun`` (``plan.slurm.srun_argv``) started in its own session (so the
terminal's Ctrl-C reaches us, not the sruns, and we cancel the steps ourselves), with a JSON
record under ``RUN_DIR/slurm/steps``. Steps are found again by their name
(``sglb-<run id>-<role>-<index>``) in ``squeue --steps`` of the record's job: only a step with a
record of ours is ever cancelled, and only by its own id (``scancel JOB.STEP``). A step's exit code
is the exit status of its srun (this cluster has no step accounting: notes/slurm.md, section 6);
another process than the one that started it sees ``UNKNOWN_EXIT`` once the step is gone.
Jobs submitted from a login node (``execute.slurm_jobs``) show up here too.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from sglbench.errors import ConfigError, ServerError
from sglbench.execute import slurm_jobs
from sglbench.execute.logs import log_file_lines, tail
from sglbench.execute.process import python_for
from sglbench.execute.runtime import UNKNOWN_EXIT, Instance
from sglbench.execute.slurm_setup import no_allocation, run_slurm
from sglbench.plan.servers import Command, ServerSpec
from sglbench.plan.slurm import srun_argv, step_name
from sglbench.record.schema import now
from sglbench.settings import Settings
from sglbench.types import RuntimeName

STOP_TIMEOUT_S = 15.0
# Our srun processes by step name: only their parent learns their exit status.
_SRUNS: dict[str, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class StepRecord:
    """What we keep about a step we started (``RUN_DIR/slurm/steps/<name>.json``)."""

    name: str  # the server's name: sglang-decode
    step: str  # the step's name: sglb-<run id>-decode-0
    role: str
    url: str
    run_id: str
    job_id: str
    node: str
    gpus: str
    srun_pid: int
    started: str
    argv: list[str]
    log: str  # the step's own output (srun --output)
    srun_log: str  # srun's messages: "task 0: Exited with exit code 3", ...


def _server(spec: Command) -> ServerSpec:
    if not isinstance(spec, ServerSpec):
        raise ServerError(f"{spec.name}: the slurm runtime runs servers only; the {spec.role} "
                          "runs where the harness runs")
    return spec


def job_steps(job_id: str) -> dict[str, str]:
    """Step name -> step id (``12.3``) of every step of job ``job_id`` now (none: job gone)."""
    done = run_slurm(["squeue", "-h", "--steps", "-j", job_id, "-o", "%i|%j"])
    if done.returncode != 0:
        return {}
    pairs = (line.split("|", 1) for line in done.stdout.splitlines() if "|" in line)
    return {name: step for step, name in pairs}


class SlurmRuntime:
    """Start, watch and cancel server steps through records under RUN_DIR."""

    name: RuntimeName = "slurm"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = Path(settings.run_dir).absolute()
        self.python = python_for(settings)

    # --- the Runtime protocol ------------------------------------------------------------------

    def describe(self, spec: Command) -> str:
        """The ``srun`` line of the step (``--dry-run``)."""
        server = _server(spec)
        alloc = self.settings.allocation
        return shlex.join(srun_argv(
            self.settings, server, job_id=alloc.job_id if alloc else "<job-id>",
            name=step_name("<run-id>", server), output=self.log_path(server.name),
            python=self.python))  # fmt: skip

    def start(self, spec: Command, run_id: str) -> None:
        """Start the step of ``spec`` (an old step of ours with its name is cancelled first).

        Raises:
            ConfigError: no allocation, or srun is missing.
            ServerError: srun cannot be executed.
        """
        server = _server(spec)
        alloc = self.settings.allocation
        if alloc is None:
            raise no_allocation(server.role)
        self.stop_name(server.name)
        log, srun_log = self.log_path(server.name), self.srun_log_path(server.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)  # a step that never starts must not show an old run's lines
        name = step_name(run_id, server)
        argv = srun_argv(self.settings, server, job_id=alloc.job_id, name=name, output=log,
                         python=self.python)  # fmt: skip
        with srun_log.open("wb") as out:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env=self._env())  # fmt: skip
            except FileNotFoundError:
                raise ConfigError(f"{server.role.upper()}_RUNTIME=slurm: srun not found; run "
                                  "on a node with Slurm's client") from None
        _SRUNS[name] = proc
        self._write(StepRecord(name=server.name, step=name, role=server.role, url=server.url,
                               run_id=run_id, job_id=alloc.job_id, node=server.host,
                               gpus=server.gpus, srun_pid=proc.pid, started=now(), argv=argv,
                               log=str(log), srun_log=str(srun_log)))  # fmt: skip

    def exit_code(self, spec: Command) -> int | None:
        """None while its step runs; srun's exit status once it ended (else ``UNKNOWN_EXIT``)."""
        record = self.record(spec.name)
        return UNKNOWN_EXIT if record is None else self._exit_code(record)

    def log_tail(self, spec: Command, lines: int = 40) -> str:
        """The last lines of the step's output, then srun's own last messages."""
        record = self.record(spec.name)
        own = tail(self.log_path(spec.name), lines)
        said = tail(Path(record.srun_log), 5) if record else ""
        return "\n".join(part for part in (own, said) if part)

    def log_lines(self, spec: Command, follow: bool = False) -> Iterator[str]:
        """The step's output line by line; with ``follow``, until the step ends."""
        return log_file_lines(self.log_path(spec.name), follow=follow, poll_s=0.2,
                              ended=lambda: self.exit_code(spec) is not None)

    def stop(self, spec: Command) -> bool:
        """Cancel its step (SIGTERM, then SIGKILL after a deadline); True if it was running."""
        return self.stop_name(spec.name)

    def instances(self) -> list[Instance]:
        """Our steps (running or ended) and the jobs ``invoke submit`` sent."""
        steps = {job: job_steps(job) for job in {r.job_id for r in self.records()}}
        found = [self._instance(r, steps[r.job_id]) for r in self.records()]
        return found + slurm_jobs.job_instances(self.settings)

    def stop_run(self, run_id: str | None) -> list[Instance]:
        """Cancel the steps of run ``run_id``; None: every step and submitted job of ours."""
        found = []
        for record in self.records():
            if run_id is None or record.run_id == run_id:
                found.append(self._instance(record, job_steps(record.job_id)))
                self.stop_name(record.name)
        if run_id is None:
            found += slurm_jobs.cancel_jobs(self.settings)
        return found

    # --- records ----------------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        """The step's output file (slurmstepd writes it on the node: RUN_DIR must be shared)."""
        return self.run_dir / "logs" / f"{name}.log"

    def srun_log_path(self, name: str) -> Path:
        """Where srun's own messages go."""
        return self.run_dir / "logs" / f"{name}.srun.log"

    def record(self, name: str) -> StepRecord | None:
        """The record of server ``name``, or None (missing or unreadable: not ours)."""
        try:
            data = json.loads((self.run_dir / "slurm" / "steps" / f"{name}.json").read_text())
            return StepRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def records(self) -> list[StepRecord]:
        """Every readable record, sorted by name."""
        folder = self.run_dir / "slurm" / "steps"
        found = (self.record(p.stem) for p in sorted(folder.glob("*.json"))) \
            if folder.is_dir() else ()
        return [r for r in found if r is not None]

    def _env(self) -> dict[str, str] | None:
        """srun exports its environment to the step: add HF_TOKEN when it lives only in .env."""
        if self.settings.hf_token is None:
            return None  # inherit as is
        return {**os.environ, "HF_TOKEN": self.settings.hf_token.get_secret_value()}

    def _write(self, record: StepRecord) -> None:
        path = self.run_dir / "slurm" / "steps" / f"{record.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
        tmp.replace(path)

    # --- watching and stopping ---------------------------------------------------------------

    def _exit_code(self, record: StepRecord, steps: dict[str, str] | None = None) -> int | None:
        srun = _srun(record)
        if srun is not None:
            return srun.poll()
        steps = job_steps(record.job_id) if steps is None else steps
        return None if record.step in steps else UNKNOWN_EXIT

    def _instance(self, record: StepRecord, steps: dict[str, str]) -> Instance:
        code = self._exit_code(record, steps)
        step = steps.get(record.step)
        where = f"step {step}" if step else f"job {record.job_id}"
        return Instance(name=record.name, role=record.role, runtime="slurm",
                        where=f"{where} on {record.node}", url=record.url,
                        state="running" if code is None else "exited", exit_code=code,
                        run_id=record.run_id)  # fmt: skip

    def stop_name(self, name: str) -> bool:
        """Cancel the step of server ``name`` if a record of ours names it; drop the record."""
        record = self.record(name)
        if record is None:
            return False
        srun = _srun(record)
        step = job_steps(record.job_id).get(record.step)
        running = step is not None or (srun is not None and srun.poll() is None)
        if step is not None:
            # TERM first (a server may shut down cleanly), then SIGKILL; scancel's exit status
            # says nothing for steps on fewer nodes than the job (notes/slurm.md, section 5).
            for signal_args in (["--signal=TERM"], []):
                run_slurm(["scancel", *signal_args, step])
                if _wait_gone(record, srun, STOP_TIMEOUT_S):
                    break
        if srun is not None and srun.poll() is None:
            srun.terminate()  # no step yet (still being created): srun ends it itself
            try:
                srun.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                srun.kill()
                srun.wait(5)
        (self.run_dir / "slurm" / "steps" / f"{name}.json").unlink(missing_ok=True)
        return running


def _srun(record: StepRecord) -> subprocess.Popen[bytes] | None:
    """Our srun of the record's step, if this process started it."""
    srun = _SRUNS.get(record.step)
    return srun if srun is not None and srun.pid == record.srun_pid else None


def _wait_gone(record: StepRecord, srun: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    """Wait until the step has left squeue (and our srun exited); False at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        srun_done = srun is None or srun.poll() is not None
        if srun_done and record.step not in job_steps(record.job_id):
            return True
        time.sleep(0.2)
    return False

