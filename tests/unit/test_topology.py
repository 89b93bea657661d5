"""Topologies as data: the syntax users type, names in files, GPU budgets, ports and GPU ids."""

from __future__ import annotations

import pytest

from sglbench.errors import ConfigError
from sglbench.execute.compare import describe_compare
from sglbench.plan.router import router_spec
from sglbench.plan.servers import server_specs
from sglbench.plan.topology import budget_topologies, run_topologies, unequal_budget
from sglbench.settings import Settings, load_settings
from sglbench.types import Topology, parse_mode_name, parse_topology


def make(**keys: str) -> Settings:
    return load_settings(None, {}, keys).settings


@pytest.mark.parametrize(("text", "name", "gpus"), [
    ("agg", "agg", 1), ("aggx2", "agg_x2", 2), ("AGGx2@tp2", "agg_x2_tp2", 4),
    ("1p1d", "pd", 2), ("1p3d", "pd_1p3d", 4), ("2p2d@tp2", "pd_2p2d_tp2", 8),
    ("1p1d@tp2/1", "pd_1p1d_tp2-1", 3),
])  # fmt: skip
def test_the_syntax_names_and_gpu_counts(text: str, name: str, gpus: int) -> None:
    topology = parse_topology(text)
    assert (topology.name, topology.gpus) == (name, gpus)
    assert parse_mode_name(name) == topology  # a name in a file reads back as the same topology


@pytest.mark.parametrize("text", ["agg2", "1p", "pdx2", "1p1d@tp", "aggx2@tp2/1", "0p1d"])
def test_malformed_topologies_are_one_line_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--topologies: .*(topology|at least 1|one TP size)"):
        run_topologies(make(), topologies=[text])


def test_names_of_the_first_layout_and_the_reference_runs_still_read() -> None:
    assert parse_mode_name("pd_2p1d") == Topology.disaggregated(2, 1)
    assert parse_mode_name("agg") == Topology.aggregated()
    assert parse_mode_name("pd_intra") is None and parse_mode_name("agg_n50") is None


def test_a_gpu_budget_gives_agg_and_every_pd_split() -> None:
    names = [t.name for t in budget_topologies(make(), 4)]
    assert names == ["agg_x4", "pd_1p3d", "pd_2p2d", "pd_3p1d"]
    with_tp = [t.name for t in budget_topologies(make(AGG_TP="2", DECODE_TP="2"), 4)]
    assert with_tp == ["agg_x2_tp2", "pd_2p1d_tp1-2"]
    with pytest.raises(ConfigError, match="COMPARE_GPUS=3: with AGG_TP=2"):
        budget_topologies(make(AGG_TP="2"), 3)


def test_the_command_line_beats_the_settings_and_one_way_is_given() -> None:
    settings = make(COMPARE_TOPOLOGIES="aggx2,1p1d", DECODE_PORT="30010", AGG_GPUS="0,1")
    assert [t.name for t in run_topologies(settings)] == ["agg_x2", "pd"]
    assert [t.name for t in run_topologies(settings, modes=["agg"])] == ["agg"]
    assert [t.name for t in run_topologies(settings, gpus=2)] == ["agg_x2", "pd"]
    with pytest.raises(ConfigError, match="--topologies and --modes: give one of them"):
        run_topologies(settings, modes=["agg"], topologies=["agg"])
    with pytest.raises(ConfigError, match="agg_x2 given twice"):
        run_topologies(settings, topologies=["aggx2", "AGGx2"])


def test_an_equal_budget_says_nothing_and_an_unequal_one_says_so() -> None:
    assert unequal_budget([Topology.aggregated(2), Topology.disaggregated()]) is None
    said = unequal_budget([Topology.aggregated(), Topology.disaggregated()])
    assert said is not None and "agg 1, 1P1D 2 GPUs" in said


def test_agg_replicas_are_fronted_by_the_router_in_regular_mode() -> None:
    settings = make(NUM_AGG="2", AGG_GPUS="0,1", ROUTER_POLICY="round_robin")
    topology = settings.topology("agg")
    workers = server_specs(settings, "agg", topology)
    assert [(w.name, w.port) for w in workers] == [("sglang-agg-0", 30000), ("sglang-agg-1", 30001)]
    args = list(router_spec(settings, topology).args)
    assert args[:3] == ["--worker-urls", workers[0].url, workers[1].url]
    assert "--pd-disaggregation" not in args and args[3:5] == ["--policy", "round_robin"]
    with pytest.raises(ConfigError, match="ROUTER_IMPL=mini-lb routes PD only"):
        run_topologies(make(ROUTER_IMPL="mini-lb"), topologies=["aggx2"])


def test_dry_run_of_agg_x2_tp2_and_2p2d_on_a_host_with_8_gpus() -> None:
    """Each worker its own ids: agg x2 TP2 on 0-3, prefill on 4,5, decode on 6,7 of one host."""
    settings = make(RUNTIME="docker", AGG_GPUS="0,1,2,3", PREFILL_GPUS="4,5", DECODE_GPUS="6,7",
                    PREFILL_HOST="10.0.0.1", DECODE_HOST="10.0.0.1", AGG_HOST="10.0.0.1",
                    DECODE_PORT="30010", BENCH_DATASET="random-ids")  # fmt: skip
    text = "\n".join(describe_compare(settings, topologies=["aggx2@tp2", "2p2d"]))
    assert 'device=0,1"' in text and 'device=2,3"' in text
    assert text.count("--tp-size 2") == 2  # the agg workers only
    for gpu in "4567":
        assert f'device={gpu}"' in text
    assert "## agg_x2_tp2: agg x2 TP2, 4 GPU(s)" in text and "## pd_2p2d: 2P2D, 4 GPU(s)" in text
    assert "## note" not in text  # 4 GPUs each: an equal budget


@pytest.mark.parametrize(("keys", "message"), [
    ({"AGG_GPUS": "0,1,2"}, r"AGG_GPUS=0,1,2: agg x2 TP2 runs 2 agg worker\(s\) of TP 2, which "
                            r"need 4 GPU ids"),
    ({"AGG_GPUS": "all"}, r"AGG_GPUS=all: 2 agg workers of agg x2 TP2 would share every GPU"),
    ({"PREFILL_GPUS": "0,1", "DECODE_GPUS": "1,2"},
     r"PREFILL_MEM_FRACTION/DECODE_MEM_FRACTION: prefill and decode share a GPU"),
])  # fmt: skip
def test_gpu_overlap_on_one_host_is_a_one_line_error(keys: dict[str, str], message: str) -> None:
    settings = make(RUNTIME="docker", PREFILL_HOST="10.0.0.1", DECODE_HOST="10.0.0.1",
                    DECODE_PORT="30010", **{"AGG_GPUS": "0,1,2,3", **keys})  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        run_topologies(settings, topologies=["aggx2@tp2", "2p2d"])


def test_prefill_and_decode_may_share_a_gpu_when_their_memory_fits() -> None:
    """SGLang's pd_intra runs: both on one GH200, --mem-fraction-static 0.45 each."""
    settings = make(RUNTIME="docker", PREFILL_HOST="10.0.0.1", DECODE_HOST="10.0.0.1",
                    PREFILL_GPUS="0", DECODE_GPUS="0", MEM_FRACTION="0.45")  # fmt: skip
    assert [t.name for t in run_topologies(settings, modes=["pd"])] == ["pd"]


def test_ports_of_a_listed_topology_are_checked_when_the_settings_load() -> None:
    with pytest.raises(ConfigError, match=r"DECODE_PORT=30001: decode worker 0 would listen on "
                                          r"172.16.40.80:30001|PREFILL_PORT"):
        make(COMPARE_TOPOLOGIES="2p1d", PREFILL_HOST="172.16.40.80")
