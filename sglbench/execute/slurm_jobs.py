"""``invoke submit``: the comparison as a batch job, followed from the login node; and the Slurm
part of a run's record.

``submit_job`` checks what it can before anything is written (a role on Slurm, sbatch here, the
partition exists and has the nodes the topologies need, pyxis when asked for), writes the sbatch
script under ``RUN_DIR/slurm/jobs/<stamp>/``, submits it with ``sbatch --parsable`` and keeps a
record beside it; ``status``, ``logs job`` and ``down`` follow the job through that record
(``scontrol show job``, its output file, ``scancel``). Inside the job the same ``invoke compare``
runs; its record then copies the script into the run directory.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sglbench.display import is_secret
from sglbench.errors import ConfigError, ServerError
from sglbench.execute.logs import log_file_lines
from sglbench.execute.runtime import UNKNOWN_EXIT, Instance
from sglbench.execute.slurm_setup import check_pyxis, first_line, run_slurm, slurm_version
from sglbench.plan.placement import nodes_needed, place, slurm_roles
from sglbench.plan.slurm import container_image, sbatch_script
from sglbench.record.schema import SlurmRecord, now
from sglbench.settings import Settings
from sglbench.types import Topology

JOB_PREFIX = "sglb-job-"
SCRIPT_NAME = "job.sbatch"
# Job states in which the job still holds (or waits for) its nodes.
_LIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                   "RESIZING", "SIGNALING", "STAGE_OUT"})  # fmt: skip
CANCEL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class JobRecord:
    """A batch job ``invoke submit`` sent (``RUN_DIR/slurm/jobs/<stamp>/job.json``)."""

    job_id: str
    name: str
    script: str
    output: str
    submitted: str


@dataclass(frozen=True)
class JobState:
    """A job as ``scontrol show job`` says now (``GONE``: the controller forgot it)."""

    state: str
    exit_code: int | None
    nodelist: str

    @property
    def live(self) -> bool:
        """True while the job holds or waits for its nodes."""
        return self.state in _LIVE


def jobs_dir(settings: Settings) -> Path:
    """Where submitted jobs keep their script, output and record."""
    return Path(settings.run_dir).absolute() / "slurm" / "jobs"


def batch_job(settings: Settings, plan: Sequence[Topology], command: Sequence[str],
              workdir: Path, stamp: str, *, check_cluster: bool = True) -> tuple[Path, str]:
    """The script path and text of a submit, after every check (nothing written yet).

    ``check_cluster`` False (a dry run where Slurm is not installed): the partition, its node
    count and pyxis are not asked about.

    Raises:
        ConfigError: no role on Slurm, no sbatch, unknown partition, too few nodes, no pyxis.
    """
    if not any(slurm_roles(settings, t) for t in plan):
        raise ConfigError(f"invoke submit: no role of {', '.join(t.label for t in plan)} runs "
                          f"on Slurm (RUNTIME={settings.runtime}); set RUNTIME=slurm (or "
                          "AGG_/PREFILL_/DECODE_RUNTIME=slurm)")
    counts = [nodes_needed(settings, t) for t in plan]
    nodes = max(n for n, _ in counts)
    named = sorted({name for _, names in counts for name in names})
    if check_cluster:
        if shutil.which("sbatch") is None:
            raise ConfigError("invoke submit: sbatch not found; run it on a login node of the "
                              "cluster (where Slurm's client commands are installed)")
        _check_partition(settings, nodes, plan)
        if settings.cluster_container == "pyxis":
            check_pyxis()
    folder = jobs_dir(settings) / stamp
    text = sbatch_script(settings, name=f"{JOB_PREFIX}{stamp}", nodes=nodes, nodelist=named,
                         output=folder / "job-%j.out", workdir=workdir, command=command)
    return folder / SCRIPT_NAME, text


def _check_partition(settings: Settings, nodes: int, plan: Sequence[Topology]) -> None:
    part = settings.cluster_partition
    done = run_slurm(["sinfo", "-h", "-o", "%P|%D"])
    if done.returncode != 0:
        raise ServerError(f"sinfo: {first_line(done)}; is slurmctld up and reachable?")
    rows = [line.split("|") for line in done.stdout.splitlines() if "|" in line]
    known = sorted({p.rstrip("*") for p, _ in rows})
    chosen = part or next((p.rstrip("*") for p, _ in rows if p.endswith("*")), "")
    if part and part not in known:
        raise ConfigError(f"CLUSTER_PARTITION={part}: no such partition (sinfo -h -p {part} "
                          f"prints nothing); partitions here: {', '.join(known) or 'none'}")
    total = sum(int(n) for p, n in rows if p.rstrip("*") == chosen and n.isdigit())
    if chosen and total < nodes:
        widest = max(plan, key=lambda t: nodes_needed(settings, t)[0])
        raise ConfigError(f"CLUSTER_PARTITION={chosen}: {widest.label} needs {nodes} nodes "
                          f"(CLUSTER_PLACEMENT={settings.cluster_placement}, "
                          f"CLUSTER_GPUS_PER_NODE={settings.cluster_gpus_per_node}) but the "
                          f"partition has {total}; choose another partition or placement")


def submit_job(script: Path, text: str) -> JobRecord:
    """Write ``script`` and submit it; the record is kept beside it.

    Raises:
        ServerError: sbatch refused the job (nothing is left behind).
    """
    script.parent.mkdir(parents=True, exist_ok=False)
    script.write_text(text)
    done = run_slurm(["sbatch", "--parsable", str(script)])
    if done.returncode != 0:
        shutil.rmtree(script.parent)
        raise ServerError(f"sbatch refused {script.name}: {first_line(done)}")
    job_id = done.stdout.strip().split(";")[0]
    record = JobRecord(job_id=job_id, name=f"{JOB_PREFIX}{script.parent.name}",
                       script=str(script), output=str(script.parent / f"job-{job_id}.out"),
                       submitted=now())  # fmt: skip
    (script.parent / "job.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
    return record


def compare_arguments(modes: str | None, topologies: str, gpus: int, resume: str,
                      force: bool, set_: Sequence[str] | None) -> list[str]:
    """The ``invoke compare`` arguments a submitted job runs with (the submit's own ones).

    Raises:
        ConfigError: a secret in ``--set`` (it would be written into the script).
    """
    args = [*(["--modes", modes] if modes is not None else []),
            *(["--topologies", topologies] if topologies else []),
            *(["--gpus", str(gpus)] if gpus else []), *(["--resume", resume] if resume else []),
            *(["--force"] if force else [])]  # fmt: skip
    for item in set_ or []:
        if is_secret(item.partition("=")[0].strip()):
            raise ConfigError(f"--set {item.partition('=')[0]}=...: a secret would be written "
                              "into the batch script; put it in .env or the environment")
        args += ["--set", item]
    return args


def job_records(settings: Settings) -> list[JobRecord]:
    """Every job ``invoke submit`` sent from this RUN_DIR, oldest first."""
    found = []
    for path in sorted(jobs_dir(settings).glob("*/job.json")):
        try:
            found.append(JobRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # unreadable: not ours to touch
    return found


def job_state(job_id: str) -> JobState:
    """What the controller says of a job now."""
    done = run_slurm(["scontrol", "-o", "show", "job", job_id])
    if done.returncode != 0:
        return JobState("GONE", None, "")
    fields = dict(part.split("=", 1) for part in done.stdout.split() if "=" in part)
    code = fields.get("ExitCode", "").split(":")[0]
    return JobState(fields.get("JobState", "UNKNOWN"), int(code) if code.isdigit() else None,
                    fields.get("NodeList", ""))  # fmt: skip


def _instance(record: JobRecord, state: JobState) -> Instance:
    where = f"job {record.job_id} {state.state}" + (f" on {state.nodelist}"
                                                     if state.nodelist not in ("", "(null)")
                                                     else "")  # fmt: skip
    code = None if state.live else (state.exit_code if state.exit_code is not None
                                    else UNKNOWN_EXIT)  # fmt: skip
    return Instance(name=f"job-{record.job_id}", role="job", runtime="slurm", where=where,
                    url="", state="running" if state.live else "exited", exit_code=code,
                    run_id=record.name.removeprefix(JOB_PREFIX))  # fmt: skip


def job_instances(settings: Settings) -> list[Instance]:
    """The submitted jobs, as ``invoke status`` lists them."""
    return [_instance(r, job_state(r.job_id)) for r in job_records(settings)]


def cancel_jobs(settings: Settings) -> list[Instance]:
    """``scancel`` every live job we submitted, wait until it let go of its nodes, forget it.

    Returns:
        Each job as it was before (``state`` says whether it still ran).
    """
    found = []
    for record in job_records(settings):
        state = job_state(record.job_id)
        found.append(_instance(record, state))
        if state.live:
            run_slurm(["scancel", record.job_id])
            deadline = time.monotonic() + CANCEL_TIMEOUT_S
            while job_state(record.job_id).live and time.monotonic() < deadline:
                time.sleep(0.5)
        (Path(record.script).parent / "job.json").unlink(missing_ok=True)
    return found


def job_log_lines(settings: Settings, name: str, *, follow: bool) -> Iterator[str]:
    """The output of a submitted job: ``job`` (the newest) or ``job-<id>``.

    Raises:
        ConfigError: no such job of ours.
    """
    records = job_records(settings)
    wanted = records[-1:] if name == "job" else [r for r in records if f"job-{r.job_id}" == name]
    if not wanted:
        known = ", ".join(f"job-{r.job_id}" for r in records) or "none (invoke submit first)"
        raise ConfigError(f"logs {name}: no such submitted job here; known: {known}")
    path = Path(wanted[0].output)
    while follow and not path.is_file() and job_state(wanted[0].job_id).live:
        time.sleep(0.5)  # pending: the output file appears when the job starts
    yield from log_file_lines(path, follow=follow, poll_s=0.5,
                              ended=lambda: not job_state(wanted[0].job_id).live)


def slurm_record(settings: Settings, topologies: Sequence[Topology],
                 run_dir: Path) -> SlurmRecord | None:  # fmt: skip
    """The Slurm part of a run's record (None outside an allocation).

    A job sent by ``invoke submit`` from this RUN_DIR gets its script copied into ``run_dir``.
    """
    alloc = settings.allocation
    if alloc is None:
        return None
    placement = {t.name: {f"{s.role}-{s.index}": {"node": s.node, "gpus": s.gpu_ids}
                          for s in place(settings, t)} for t in topologies}  # fmt: skip
    script = None
    for record in job_records(settings):
        if record.job_id == alloc.job_id and Path(record.script).is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            script = str(shutil.copy(record.script, run_dir / SCRIPT_NAME))
    container = settings.cluster_container
    return SlurmRecord(job_id=alloc.job_id, nodelist=alloc.nodelist, nodes=list(alloc.nodes),
                       gpus_per_node=list(alloc.gpus), version=slurm_version(),
                       container=container,
                       image=container_image(settings) if container != "none" else None,
                       placement=placement, batch_script=script)  # fmt: skip

