"""The builders' argument lists parse with the REAL parsers of the programs they run.

SGLang's bench client, ``sglang.launch_server``, both routers and the simulator each parse what
we build, and give the values the original scripts' commands gave. Importing SGLang takes about
10 s here, so the parsers are module-scoped fixtures (one import per test process).
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from sglbench.plan.bench import bench_args
from sglbench.plan.router import router_spec
from sglbench.plan.servers import server_specs
from sglbench.settings import Settings, load_settings
from sglbench.types import TransferBackend

# The original 23_/24_ commands as written (abbreviations and all), minus the program name.
ORIGINAL_23 = shlex.split(
    "--backend sglang --dataset-name random --num-prompts 200 --random-input 512 "
    "--random-output 128 --request-rate inf --max-concurrency 200 "
    "--base-url http://172.16.40.79:30000 --output-file results/agg_cg1n1.jsonl --tag agg_cg1n1"
)
ORIGINAL_24 = shlex.split(
    "--backend sglang --dataset-name random --num-prompts 200 --random-input 512 "
    "--random-output 128 --request-rate inf --max-concurrency 200 --pd-separated "
    "--base-url http://127.0.0.1:8000 --output-file results/pd_cg1n1_cg1n2.jsonl "
    "--tag pd_cg1n1_cg1n2 --ignore-eos"
)
WORKLOAD = ("backend", "dataset_name", "num_prompts", "random_input_len", "random_output_len",
            "request_rate", "max_concurrency", "base_url", "output_file", "tag", "pd_separated",
            "disable_ignore_eos", "random_range_ratio", "warmup_requests", "dataset_path",
            "tokenizer")  # fmt: skip


class _Captured(Exception):
    pass


class _CapturingParser(argparse.ArgumentParser):
    def parse_args(self, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)


@pytest.fixture(scope="module")
def bench_parser() -> Iterator[argparse.ArgumentParser]:
    """The bench client's own parser, as its ``cli_main`` builds it (no copy of its flags)."""
    serving = pytest.importorskip("sglang.benchmark.serving")
    mp = pytest.MonkeyPatch()
    mp.setattr(serving, "ArgumentParser", _CapturingParser)
    try:
        serving.cli_main()
    except _Captured as captured:
        parser: argparse.ArgumentParser = captured.args[0]
    finally:
        mp.undo()
    parser.__class__ = argparse.ArgumentParser  # parse for real from now on
    yield parser


@pytest.fixture(scope="module")
def server_parser() -> argparse.ArgumentParser:
    server_args = pytest.importorskip("sglang.srt.server_args")
    parser = argparse.ArgumentParser()
    server_args.ServerArgs.add_cli_args(parser)
    return parser


@pytest.fixture
def settings() -> Settings:
    return load_settings(None, {}).settings


def ours(settings: Settings, pd: bool, tag: str) -> list[str]:
    url = router_spec(settings).url if pd else server_specs(settings, "agg")[0].url
    return bench_args(settings, base_url=url, tag=tag, output_file=Path("results", f"{tag}.jsonl"),
                      pd=pd)  # fmt: skip


def workload(ns: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(ns, k) for k in WORKLOAD}


def test_agg_bench_parses_like_the_original(
    bench_parser: argparse.ArgumentParser, settings: Settings
) -> None:
    original = workload(bench_parser.parse_args(ORIGINAL_23))
    mine = bench_parser.parse_args(ours(settings, pd=False, tag="agg_cg1n1"))
    assert workload(mine) == original
    # Named difference "bench_pinned_workload": seed 1, the client's default when the original
    # ran (0.5.5); today's default is 42.
    assert (original_seed := bench_parser.parse_args(ORIGINAL_23).seed) == 42
    assert mine.seed == 1 != original_seed
    assert mine.request_rate == float("inf")
    assert mine.disable_ignore_eos is False  # EOS ignored, as in PD


def test_original_pd_bench_is_rejected_by_todays_client(
    bench_parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    # Named difference "bench_ignore_eos_is_the_default": 24_'s --ignore-eos does not exist.
    with pytest.raises(SystemExit):
        bench_parser.parse_args(ORIGINAL_24)
    assert "unrecognized arguments: --ignore-eos" in capsys.readouterr().err


def test_pd_bench_parses_like_the_original(
    bench_parser: argparse.ArgumentParser, settings: Settings
) -> None:
    original = workload(bench_parser.parse_args([w for w in ORIGINAL_24 if w != "--ignore-eos"]))
    mine = workload(bench_parser.parse_args(ours(settings, pd=True, tag="pd_cg1n1_cg1n2")))
    assert mine == original
    assert mine["pd_separated"] is True


def test_every_bench_setting_is_accepted_by_the_client(
    bench_parser: argparse.ArgumentParser, settings: Settings
) -> None:
    for backend in get_args(Settings.model_fields["bench_backend"].annotation):
        for dataset in get_args(Settings.model_fields["bench_dataset"].annotation):
            s = settings.model_copy(update={
                "bench_backend": backend, "bench_dataset": dataset, "bench_ignore_eos": False,
                "bench_rust_client": True, "tokenizer_path": "/tok",
                "bench_dataset_path": "/data.json"})  # fmt: skip
            ns = bench_parser.parse_args(ours(s, pd=True, tag="t"))
            assert (ns.backend, ns.dataset_name) == (backend, dataset)
            assert (ns.disable_ignore_eos, ns.rust_client, ns.tokenizer) == (True, True, "/tok")


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("agg", {"port": 30000, "mem_fraction_static": 0.9, "disaggregation_mode": "null"}),
        ("prefill", {"port": 30000, "mem_fraction_static": 0.8, "disaggregation_mode": "prefill",
                     "disaggregation_bootstrap_port": 8998,
                     "disaggregation_ib_device": "mlx5_0"}),
        ("decode", {"port": 30001, "mem_fraction_static": 0.8, "disaggregation_mode": "decode",
                    "disaggregation_ib_device": "mlx5_0"}),
    ],
)  # fmt: skip
def test_servers_parse_with_sglang(
    server_parser: argparse.ArgumentParser, settings: Settings, role: Any,
    expected: dict[str, Any],
) -> None:
    ns = server_parser.parse_args(list(server_specs(settings, role)[0].args))
    assert ns.model_path == "Qwen/Qwen2.5-3B-Instruct"
    assert ns.host == "0.0.0.0"
    assert ns.disaggregation_transfer_backend == "mooncake"
    assert {k: getattr(ns, k) for k in expected} == expected


def test_transfer_backends_are_sglangs() -> None:
    choices = pytest.importorskip("sglang.srt.arg_groups.choices")
    assert list(get_args(TransferBackend)) == choices.DISAGG_TRANSFER_BACKEND_CHOICES


def _router_parser(impl: str) -> Callable[[list[str]], Any]:
    module = pytest.importorskip("smg.launch_router" if impl == "smg"
                                 else "sglang_router.launch_router")  # fmt: skip
    parse: Callable[[list[str]], Any] = module.parse_router_args
    return parse


@pytest.mark.parametrize("impl", ["mini-lb", "rust", "smg"])
def test_router_parses_with_its_real_parser(settings: Settings, impl: str) -> None:
    s = load_settings(None, {}, {"ROUTER_IMPL": impl, "NUM_PREFILL": "2", "NUM_DECODE": "2",
                                 "DECODE_HOST": "127.0.0.1"}).settings  # fmt: skip
    parsed = _router_parser(impl)(list(router_spec(s).args))
    assert parsed.pd_disaggregation is True
    assert parsed.prefill_urls == [("http://172.16.40.79:30000", 8998),
                                   ("http://172.16.40.79:30001", 8999)]  # fmt: skip
    assert parsed.decode_urls == ["http://127.0.0.1:30001", "http://127.0.0.1:30002"]
    assert (parsed.host, parsed.port) == ("0.0.0.0", 8000)
    if impl == "mini-lb":
        assert parsed.mini_lb is True
    else:
        assert (parsed.prometheus_host, parsed.prometheus_port) == ("127.0.0.1", 29000)


def test_original_router_had_no_bootstrap_port() -> None:
    # Named difference "router_bootstrap_port_explicit": the original left it to the default.
    original = shlex.split("--mini-lb --pd-disaggregation --prefill http://172.16.40.79:30000 "
                           "--decode http://127.0.0.1:30001 --host 0.0.0.0 --port 8000")
    parsed = _router_parser("mini-lb")(original)
    assert parsed.prefill_urls == [("http://172.16.40.79:30000", None)]


@pytest.mark.parametrize("role", ["agg", "prefill", "decode"])
def test_simulated_servers_parse_with_the_simulator(settings: Settings, role: Any) -> None:
    from sglbench.sim.cli import parse_args

    s = settings.model_copy(update={"simulate": True, "sim_profile": "h100-qwen2.5-3b"})
    spec = server_specs(s, role)[0]
    args, ignored = parse_args(spec.args)
    assert ignored == []  # the simulator understands every flag we pass
    assert (args.port, args.sim_profile) == (spec.port, "h100-qwen2.5-3b")
    assert args.disaggregation_mode == {"agg": "null"}.get(role, role)
