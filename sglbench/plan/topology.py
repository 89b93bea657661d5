"""Pure builders: the topologies a compare run measures, and the GPUs each worker gets.

A run's topologies come, in this order of precedence, from ``--topologies`` (or
``COMPARE_TOPOLOGIES``), from a GPU budget (``--gpus`` or ``COMPARE_GPUS``: agg xN and every PD
split of N), or from ``--modes agg,pd`` with NUM_AGG / NUM_PREFILL / NUM_DECODE and the *_TP keys.
A budget makes the comparison fair by construction; topologies of different GPU counts are
allowed (the original's 1 GPU against 2) and said to be unequal everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from sglbench.errors import ConfigError
from sglbench.hosts import same_machine
from sglbench.plan.placement import place
from sglbench.settings import Settings
from sglbench.settings.checks import check_listeners
from sglbench.types import MODE_KINDS, TOPOLOGY_SYNTAX, ModeKind, Role, Topology, parse_topology


def from_settings(settings: Settings, kind: ModeKind) -> Topology:
    """The topology ``--modes agg`` or ``pd`` means: NUM_* workers, *_TP each."""
    return settings.topology(kind)


def budget_topologies(settings: Settings, gpus: int) -> list[Topology]:
    """Agg xN and every PD split xPyD of a budget of ``gpus`` GPUs (TP from the *_TP keys).

    Raises:
        ConfigError: no topology fits the budget exactly.
    """
    tp = settings.role_tp()
    found = []
    if gpus % tp["agg"] == 0:
        found.append(Topology.aggregated(gpus // tp["agg"], tp["agg"]))
    for prefill in range(1, gpus // tp["prefill"] + 1):
        rest = gpus - prefill * tp["prefill"]
        if rest > 0 and rest % tp["decode"] == 0:
            found.append(Topology.disaggregated(prefill, rest // tp["decode"], tp["prefill"],
                                                tp["decode"]))  # fmt: skip
    if len(found) < 2 or found[0].kind != "agg":
        raise ConfigError(f"COMPARE_GPUS={gpus}: with AGG_TP={tp['agg']}, PREFILL_TP="
                          f"{tp['prefill']}, DECODE_TP={tp['decode']} no agg and PD topology "
                          "uses exactly that many GPUs; choose a budget the TP sizes divide")
    return found


def run_topologies(settings: Settings, *, modes: Sequence[str] = (),
                   topologies: Sequence[str] = (), gpus: int | None = None) -> list[Topology]:
    """The topologies of a compare run, in order, each once.

    The command line beats the settings: ``--topologies``, ``--modes`` or ``--gpus`` (one of
    them), else COMPARE_TOPOLOGIES, else COMPARE_GPUS, else ``agg,pd``.

    Args:
        settings: the run's settings (COMPARE_TOPOLOGIES, COMPARE_GPUS, NUM_*, *_TP).
        modes: ``--modes`` (agg, pd): NUM_* workers, *_TP each.
        topologies: ``--topologies`` items.
        gpus: ``--gpus``: agg xN and every PD split of N.

    Raises:
        ConfigError: an unknown, repeated or malformed item; two ways given at once; a budget
            nothing fits.
    """
    given = [flag for flag, value in (("--topologies", topologies), ("--modes", modes),
                                      ("--gpus", gpus is not None)) if value]  # fmt: skip
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: give one of them (they all choose the "
                          "topologies)")
    if topologies:
        planned = [_parse(item, settings, "--topologies") for item in topologies]
    elif modes:
        planned = _from_modes(settings, modes)
    elif gpus is not None:
        planned = budget_topologies(settings, gpus)
    elif settings.compare_topologies:
        planned = [_parse(item, settings, "COMPARE_TOPOLOGIES")
                   for item in settings.compare_topologies]  # fmt: skip
    elif settings.compare_gpus is not None:
        planned = budget_topologies(settings, settings.compare_gpus)
    else:
        planned = _from_modes(settings, MODE_KINDS)
    names = [t.name for t in planned]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"topologies: {', '.join(repeated)} given twice; list each once")
    for topology in planned:
        check_topology(settings, topology)
    return planned


def _from_modes(settings: Settings, modes: Sequence[str]) -> list[Topology]:
    for n, mode in enumerate(modes):
        if mode not in MODE_KINDS or mode in modes[:n]:
            raise ConfigError(f"--modes: {mode!r} is unknown or repeated; expected agg, pd or "
                              f"agg,pd (or --topologies {TOPOLOGY_SYNTAX})")
    return [settings.topology("agg" if mode == "agg" else "pd") for mode in modes]


def _parse(item: str, settings: Settings, where: str) -> Topology:
    try:
        return parse_topology(item, settings.role_tp())
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def unequal_budget(topologies: Sequence[Topology]) -> str | None:
    """A sentence when the topologies hold different GPU counts (None: an equal budget)."""
    counts = {t.gpus for t in topologies}
    if len(counts) <= 1:
        return None
    shown = ", ".join(f"{t.label} {t.gpus}" for t in topologies)
    return (f"the topologies hold different GPU counts ({shown} GPUs): throughput per GPU is "
            "comparable, latency at equal load is not (set COMPARE_GPUS for an equal budget)")


def worker_gpus(gpus: str, index: int, tp: int, workers: int) -> str:
    """The GPU ids of worker ``index`` of a role: its own slice of the role's id list.

    With ids given, worker i gets ids[i*tp:(i+1)*tp]; ``all`` stays ``all``. Where GPUs are
    requested, ``check_topology`` refuses ``all`` for several workers and too few ids.
    """
    if gpus == "all":
        return "all"
    ids = [g for g in gpus.split(",") if g]
    if workers == 1 or len(ids) < workers * tp:
        return ",".join(ids)  # too few ids: every worker sees them all (fine without GPUs)
    return ",".join(ids[index * tp : (index + 1) * tp])


def check_topology(settings: Settings, topology: Topology) -> None:
    """Ports and GPU ids of a topology: every worker its own port range and its own GPUs.

    GPUs are checked only where they are requested (not for the simulator, not with
    DOCKER_GPUS=false on docker): on one host, no two workers of a role may hold the same GPU
    id; a prefill and a decode worker may share one (as SGLang's pd_intra runs do) only when
    their --mem-fraction-static values leave room for both (sum at most 1).

    Raises:
        ConfigError: naming the keys to change.
    """
    if topology.kind == "agg" and topology.agg > 1 and settings.router_impl == "mini-lb":
        raise ConfigError(f"ROUTER_IMPL=mini-lb routes PD only; {topology.label} needs a router "
                          "in regular mode: set ROUTER_IMPL=rust or smg")
    check_listeners(settings, topology)
    place(settings, topology)  # Slurm roles: nodes, GPUs and ports per node
    if _gpus_requested(settings):
        _check_gpu_ids(settings, topology)


def _gpus_requested(settings: Settings) -> bool:
    if settings.simulate:
        return False
    return any(settings.role(r).runtime == "process" or settings.docker_gpus
               for r in ("agg", "prefill", "decode"))


def _check_gpu_ids(settings: Settings, topology: Topology) -> None:
    held: dict[tuple[str, str], str] = {}  # (host, gpu id) -> the worker holding it
    for role, count in topology.workers.items():
        own = settings.role(role)
        if own.runtime == "slurm":
            continue  # the placement gives each Slurm worker its own GPUs
        tp = topology.tp(role)
        ids = [g for g in own.gpus.split(",") if g]
        if own.gpus == "all":
            if count > 1:
                raise ConfigError(f"{own.key('GPUS')}=all: {count} {role} workers of "
                                  f"{topology.label} would share every GPU; give {count * tp} "
                                  f"GPU ids, e.g. {own.key('GPUS')}="
                                  f"{','.join(map(str, range(count * tp)))}")  # fmt: skip
            continue
        if len(ids) < count * tp:
            raise ConfigError(f"{own.key('GPUS')}={own.gpus}: {topology.label} runs {count} "
                              f"{role} worker(s) of TP {tp}, which need {count * tp} GPU ids; "
                              f"list that many in {own.key('GPUS')}")
        for index in range(count):
            for gpu in worker_gpus(own.gpus, index, tp, count).split(","):
                key = (same_machine(own.host), gpu)
                worker = f"{role}-{index} ({own.key('GPUS')})"
                if key in held and _may_share(settings, held[key], role):
                    continue
                if key in held:
                    raise ConfigError(f"{own.key('GPUS')}={own.gpus}: GPU {gpu} on {own.host} "
                                      f"would be held by {worker} and by {held[key]} in "
                                      f"{topology.label}; give each worker its own ids")
                held[key] = worker


def _may_share(settings: Settings, holder: str, role: Role) -> bool:
    """A prefill and a decode worker on one GPU, with memory fractions that fit together."""
    other: Role = "prefill" if holder.startswith("prefill") else "decode"
    if other == role or role == "agg":
        return False
    total = settings.role("prefill").mem_fraction + settings.role("decode").mem_fraction
    if total > 1.0:
        raise ConfigError(f"PREFILL_MEM_FRACTION/DECODE_MEM_FRACTION: prefill and decode share "
                          f"a GPU ({holder} and a {role} worker) but their memory fractions "
                          f"add up to {total:g} (> 1); lower them (e.g. 0.45 each) or give "
                          "them different GPU ids")
    return True
