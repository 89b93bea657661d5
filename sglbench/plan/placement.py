"""Pure builder: which Slurm node and which of its GPUs each worker of a topology gets.

Only roles whose runtime is ``slurm`` are placed. Nodes are the allocation's (``Settings.
allocation``, found by the task layer from SLURM_JOB_ID); without one (a dry run, or ``invoke
submit`` counting the nodes to ask for) they are placeholders ``<node1>``, ``<node2>``, ...

A worker of TP ``t`` needs ``t`` GPUs of one node (TP never spans nodes here). ``split`` (the
default, as the original: prefill on cg1n1, decode on cg1n2) starts each role on a node no earlier
role used; ``pack`` puts each worker on the first node with enough free GPUs; ``<ROLE>_NODES``
lists a role's nodes explicitly. A worker's GPU ids are ordinals among the job's GPUs on its node
(0, 1, ...), which the step gets as CUDA_VISIBLE_DEVICES: overlapping steps would otherwise all
see every GPU of the job (``srun --overlap`` with a gres flag shares them, see notes/slurm.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sglbench.errors import ConfigError
from sglbench.settings import Settings
from sglbench.types import Role, Topology


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: its node and the GPU ordinals it holds there."""

    role: Role
    index: int
    node: str
    gpus: tuple[int, ...]

    @property
    def gpu_ids(self) -> str:
        """The GPU ids as CUDA_VISIBLE_DEVICES writes them: ``0`` or ``2,3``."""
        return ",".join(map(str, self.gpus))


def placeholder_nodes(count: int) -> tuple[str, ...]:
    """``<node1>``, ``<node2>``, ...: nodes of an allocation that does not exist yet."""
    return tuple(f"<node{n}>" for n in range(1, count + 1))


def slurm_roles(settings: Settings, topology: Topology) -> list[Role]:
    """The roles of ``topology`` that run as Slurm job steps."""
    return [r for r in topology.workers if settings.role(r).runtime == "slurm"]


def place(settings: Settings, topology: Topology) -> list[Slot]:
    """Every Slurm worker of ``topology`` on a node of the allocation (or on placeholders).

    Raises:
        ConfigError: the allocation has too few nodes or GPUs, a role names a node outside it,
            a TP size exceeds a node's GPUs, or two workers on a node would share a port.
    """
    if settings.allocation is None:
        explicit = {n for r in slurm_roles(settings, topology) for n in settings.role(r).nodes}
        nodes = (*sorted(explicit), *placeholder_nodes(sum(topology.workers.values())))
        gpus = [settings.cluster_gpus_per_node] * len(nodes)
    else:
        nodes = settings.allocation.nodes
        given = settings.allocation.gpus
        gpus = [given[i] if i < len(given) and given[i] > 0 else settings.cluster_gpus_per_node
                for i in range(len(nodes))]  # fmt: skip
    slots = _place_on(settings, topology, nodes, gpus)
    _check_ports(settings, slots)
    return slots


def nodes_needed(settings: Settings, topology: Topology) -> tuple[int, tuple[str, ...]]:
    """How many nodes ``topology`` takes (with CLUSTER_GPUS_PER_NODE each), and the explicit
    ``<ROLE>_NODES`` names among them (``invoke submit`` asks sbatch for these).
    """
    free = settings.model_copy(update={"allocation": None})
    used = {s.node for s in place(free, topology)}
    explicit = tuple(sorted(n for n in used if not n.startswith("<node")))
    return len(used), explicit


def _place_on(settings: Settings, topology: Topology, nodes: Sequence[str],
              gpus: Sequence[int]) -> list[Slot]:  # fmt: skip
    free = {node: list(range(count)) for node, count in zip(nodes, gpus, strict=True)}
    slots: list[Slot] = []
    for role in slurm_roles(settings, topology):
        own = settings.role(role)
        tp = topology.tp(role)
        widest = max(gpus, default=0)
        if tp > widest:
            raise ConfigError(f"{own.key('TP')}={tp}: a worker's TP spans one node here, and the "
                              f"nodes have at most {widest} GPU(s); lower {own.key('TP')} or "
                              "raise CLUSTER_GPUS_PER_NODE")
        for name in own.nodes:
            if name not in free:
                raise ConfigError(f"{own.key('NODES')}: node {name} is not in the allocation "
                                  f"({_shown(settings, nodes)}); name nodes of the allocation")
        taken = {s.node for s in slots}  # split: nodes no earlier role uses
        candidates = (list(own.nodes) if own.nodes
                      else list(nodes) if settings.cluster_placement == "pack"
                      else [n for n in nodes if n not in taken])  # fmt: skip
        for index in range(topology.workers[role]):
            fits = [n for n in candidates if len(free[n]) >= tp]
            if not fits:
                raise _too_small(settings, topology, role, index, nodes)
            node = fits[0]
            held, free[node] = tuple(free[node][:tp]), free[node][tp:]
            slots.append(Slot(role, index, node, held))
    return slots


def _too_small(settings: Settings, topology: Topology, role: Role, index: int,
               nodes: Sequence[str]) -> ConfigError:  # fmt: skip
    own = settings.role(role)
    where = (f"{own.key('NODES')}={','.join(own.nodes)}" if own.nodes
             else f"CLUSTER_PLACEMENT={settings.cluster_placement}")  # fmt: skip
    more = f"name nodes with more free GPUs in {own.key('NODES')}" if own.nodes else \
        "allocate more nodes"
    if settings.allocation is not None and not own.nodes:
        needed, _ = nodes_needed(settings, topology)  # on placeholders: always fits
        more = f"allocate {needed} nodes (salloc -N{needed})"
    other = " or set CLUSTER_PLACEMENT=pack" if settings.cluster_placement == "split" else ""
    return ConfigError(f"{where}: {topology.label} does not fit: {role} worker {index} (TP "
                       f"{topology.tp(role)}) finds no node with enough free GPUs among "
                       f"{_shown(settings, nodes)}; {more}{other}")


def _shown(settings: Settings, nodes: Sequence[str]) -> str:
    alloc = settings.allocation
    if alloc is None:
        return ", ".join(nodes)
    return f"allocation {alloc.job_id}: {len(nodes)} node(s) {alloc.nodelist}"


def _check_ports(settings: Settings, slots: Sequence[Slot]) -> None:
    """No two listeners (worker ports, bootstrap ports) of workers on one node share a port."""
    seen: dict[tuple[str, int], str] = {}
    for slot in slots:
        own = settings.role(slot.role)
        ports = [(own.port + slot.index, own.key("PORT"))]
        if slot.role == "prefill":
            ports.append((settings.bootstrap_port + slot.index, "BOOTSTRAP_PORT"))
        for port, key in ports:
            what = f"{slot.role}-{slot.index} ({key})"
            first = seen.setdefault((slot.node, port), what)
            if first != what:
                raise ConfigError(f"{key}: {what} and {first} would both listen on "
                                  f"{slot.node}:{port}; choose ports outside each other's "
                                  "ranges")
