"""The builders run what the original scripts ran, flag by flag, for the same settings.

Each ``original_*`` function transcribes the command one original script (``scripts/10_`` ...
``24_``) ran, as a function of its environment variables. Where we differ on purpose, the
difference is a named entry of ``DIFFERENCES`` applied to the original's flags, so that every
intentional change is written down once, with its reason, and nothing else may differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from sglbench.plan.bench import BENCH_MODULE, bench_args
from sglbench.plan.router import router_spec
from sglbench.plan.servers import SGLANG_SERVER_MODULE, SIM_SERVER_MODULE, launch_args, server_specs
from sglbench.plan.sweep import sweep_points
from sglbench.settings import Settings, load_settings
from sglbench.types import Role

# The original 00_common.sh defaults.
ORIGINAL_ENV = {
    "MODEL_PATH": "Qwen/Qwen2.5-3B-Instruct",
    "PREFILL_HOST": "172.16.40.79",
    "DECODE_HOST": "172.16.40.80",
    "PREFILL_PORT": "30000",
    "DECODE_PORT": "30001",
    "ROUTER_PORT": "8000",
    "BENCH_NUM_PROMPTS": "200",
    "BENCH_INPUT_LEN": "512",
    "BENCH_OUTPUT_LEN": "128",
    "BENCH_MAX_CONCURRENCY": "200",
}
Flags = dict[str, tuple[str, ...]]


def flags(argv: list[str]) -> Flags:
    """``--flag v1 v2 --other`` -> {flag: (v1, v2), other: ()}; a repeated flag fails."""
    out: dict[str, list[str]] = {}
    current = ""
    for word in argv:
        if word.startswith("--"):
            assert word not in out, f"{word} given twice in {argv}"
            current = word
            out[current] = []
        else:
            assert current, f"value {word!r} before any flag in {argv}"
            out[current].append(word)
    return {k: tuple(v) for k, v in out.items()}


def original_server(env: Mapping[str, str], role: str) -> list[str]:
    """The launch_server command of 10_ (agg), 20_ (prefill) or 21_ (decode)."""
    port, fraction = {"agg": ("30000", "0.9"), "prefill": ("30000", "0.8"),
                      "decode": ("30001", "0.8")}[role]  # fmt: skip
    argv = ["python3", "-m", "sglang.launch_server", "--model-path", env["MODEL_PATH"],
            "--host", "0.0.0.0", "--port", port, "--mem-fraction-static", fraction]  # fmt: skip
    if role != "agg":
        argv += ["--disaggregation-mode", role, "--disaggregation-ib-device", "mlx5_0"]
    if role == "prefill":
        argv += ["--disaggregation-bootstrap-port", "8998"]
    return argv


def original_router(env: Mapping[str, str]) -> list[str]:
    """22_run_router_pd.sh."""
    return ["python3", "-m", "sglang_router.launch_router", "--mini-lb", "--pd-disaggregation",
            "--prefill", f"http://{env['PREFILL_HOST']}:{env['PREFILL_PORT']}",
            "--decode", f"http://127.0.0.1:{env['DECODE_PORT']}",
            "--host", "0.0.0.0", "--port", env["ROUTER_PORT"]]  # fmt: skip


def original_bench(env: Mapping[str, str], pd: bool, tag: str) -> list[str]:
    """23_bench_agg.sh (pd=False) or 24_bench_pd_disagg.sh (pd=True), abbreviations as written."""
    base = (f"http://127.0.0.1:{env['ROUTER_PORT']}" if pd
            else f"http://{env['PREFILL_HOST']}:{env['PREFILL_PORT']}")  # fmt: skip
    argv = ["python3", "-m", "sglang.bench_serving", "--backend", "sglang",
            "--dataset-name", "random", "--num-prompts", env["BENCH_NUM_PROMPTS"],
            "--random-input", env["BENCH_INPUT_LEN"], "--random-output", env["BENCH_OUTPUT_LEN"],
            "--request-rate", "inf", "--max-concurrency", env["BENCH_MAX_CONCURRENCY"]]  # fmt: skip
    if pd:
        argv.append("--pd-separated")
    argv += ["--base-url", base, "--output-file", f"benchmarks/results/{tag}.jsonl", "--tag", tag]
    if pd:
        argv.append("--ignore-eos")
    return argv


@dataclass(frozen=True)
class Difference:
    """One intentional difference from the original command, with its reason."""

    name: str
    why: str
    apply: Callable[[list[str]], list[str]]


def _replace(old: str, new: str) -> Callable[[list[str]], list[str]]:
    return lambda argv: [new if w == old else w for w in argv]


def _drop(flag: str) -> Callable[[list[str]], list[str]]:
    return lambda argv: [w for w in argv if w != flag]


def _add(*words: str) -> Callable[[list[str]], list[str]]:
    return lambda argv: [*argv, *words]


def _after(anchor_flag: str, word: str) -> Callable[[list[str]], list[str]]:
    def apply(argv: list[str]) -> list[str]:
        i = argv.index(anchor_flag)
        return [*argv[: i + 2], word, *argv[i + 2 :]]

    return apply


DIFFERENCES: dict[str, Difference] = {d.name: d for d in (
    Difference("router_bootstrap_port_explicit",
               "no router reads the bootstrap port from the worker; without it the router "
               "sends bootstrap_port null (FACTS.md), so we pass BOOTSTRAP_PORT after the URL",
               _after("--prefill", "8998")),
    Difference("bench_module_moved", "sglang.bench_serving now lives in sglang.benchmark.serving",
               _replace("sglang.bench_serving", BENCH_MODULE)),
    Difference("bench_full_flag_names",
               "--random-input/--random-output are argparse abbreviations of the *-len flags",
               lambda a: _replace("--random-output", "--random-output-len")(
                   _replace("--random-input", "--random-input-len")(a))),
    Difference("bench_results_dir", "RESULTS_DIR defaults to results/ (was benchmarks/results/)",
               lambda a: [w.replace("benchmarks/results/", "results/") for w in a]),
    Difference("bench_ignore_eos_is_the_default",
               "the client ignores EOS by default for agg and PD alike; 24_'s --ignore-eos does "
               "not exist in the client (0.5.23 rejects it), so neither mode passes it",
               _drop("--ignore-eos")),
    Difference("bench_pinned_workload",
               "range ratio, seed and warmup are written out so agg and PD runs stay comparable "
               "across client versions (seed 1 was the default when the original ran; now 42)",
               _add("--random-range-ratio", "0", "--seed", "1", "--warmup-requests", "1")),
    Difference("server_metrics",
               "--enable-metrics: every worker's /metrics is scraped around each point "
               "(BENCH_SERVER_METRICS)", _add("--enable-metrics")),
    Difference("bench_cache_hygiene",
               "--flush-cache: every worker's radix cache is flushed after the warm-up "
               "(BENCH_FLUSH_CACHE); --cache-report: the client's view of prefix hits",
               _add("--cache-report", "--flush-cache")),
)}  # fmt: skip


def expected(original: list[str], *names: str) -> Flags:
    argv = original
    for name in names:
        argv = DIFFERENCES[name].apply(argv)
    return flags(argv[3:])


@pytest.fixture
def settings() -> Settings:
    return load_settings(None, ORIGINAL_ENV).settings


@pytest.mark.parametrize("role", ["agg", "prefill", "decode"])
def test_server_equals_the_original(settings: Settings, role: Role) -> None:
    (spec,) = server_specs(settings, role)
    assert spec.argv()[:3] == ["python3", "-m", SGLANG_SERVER_MODULE]
    assert flags(spec.argv()[3:]) == expected(original_server(ORIGINAL_ENV, role),
                                              "server_metrics")
    assert spec.name == f"sglang-{role}"  # the original container names


def test_agg_listens_on_agg_port_directly(settings: Settings) -> None:
    # The original mapped PREFILL_PORT -> container port 30000; ours listens on AGG_PORT.
    s = settings.model_copy(update={"agg_port": 31000})
    (spec,) = server_specs(s, "agg")
    assert flags(list(spec.args))["--port"] == ("31000",)
    assert spec.url == "http://172.16.40.79:31000"


def test_router_equals_the_original_with_mini_lb(settings: Settings) -> None:
    s = settings.model_copy(update={"router_impl": "mini-lb", "decode_host": "127.0.0.1"})
    spec = router_spec(s)
    assert spec.argv()[:3] == ["python3", "-m", "sglang_router.launch_router"]
    assert flags(spec.argv()[3:]) == expected(
        original_router(ORIGINAL_ENV), "router_bootstrap_port_explicit")
    assert spec.url == "http://127.0.0.1:8000"  # what 24_ benchmarked


def test_rust_router_binds_metrics_privately(settings: Settings) -> None:
    args = flags(router_spec(settings).argv()[3:])
    assert "--mini-lb" not in args
    assert args["--prometheus-host"] == ("127.0.0.1",)
    assert args["--prometheus-port"] == ("29000",)


@pytest.mark.parametrize(("pd", "tag"), [(False, "agg_cg1n1"), (True, "pd_cg1n1_cg1n2")])
def test_bench_equals_the_original(settings: Settings, pd: bool, tag: str) -> None:
    # The URL comes from the same builders the bench task uses: the agg server or the router.
    url = router_spec(settings).url if pd else server_specs(settings, "agg")[0].url
    ours = [
        "python3", "-m", BENCH_MODULE,
        *bench_args(settings, base_url=url, tag=tag, output_file=Path("results", f"{tag}.jsonl"),
                    pd=pd),
    ]  # fmt: skip
    assert ours[:3] == ["python3", "-m", "sglang.benchmark.serving"]
    assert flags(ours[3:]) == expected(
        original_bench(ORIGINAL_ENV, pd, tag), "bench_module_moved", "bench_full_flag_names",
        "bench_results_dir", "bench_ignore_eos_is_the_default", "bench_pinned_workload",
        "bench_cache_hygiene")


def test_agg_and_pd_get_the_same_workload_flags(settings: Settings) -> None:
    def workload(pd: bool) -> Flags:
        f = flags(bench_args(settings, base_url="http://x:1", tag="t", output_file=Path("o"),
                             pd=pd))  # fmt: skip
        return {k: v for k, v in f.items() if k != "--pd-separated"}

    assert workload(False) == workload(True)


def test_disable_ignore_eos_when_asked(settings: Settings) -> None:
    s = settings.model_copy(update={"bench_ignore_eos": False})
    args = bench_args(s, base_url="http://x:1", tag="t", output_file=Path("o"), pd=False)
    assert "--disable-ignore-eos" in args
    assert "--ignore-eos" not in args


def test_sweep_is_the_cross_product_in_order() -> None:
    s = load_settings(None, {}, {"BENCH_INPUT_LEN": "128,512", "BENCH_OUTPUT_LEN": "64",
                                 "BENCH_MAX_CONCURRENCY": "8 32",
                                 "BENCH_REQUEST_RATE": "4,inf"}).settings  # fmt: skip
    points = sweep_points(s)
    assert len(points) == 2 * 1 * 2 * 2
    assert [p.label for p in points[:3]] == [
        "in128_out64_c8_r4", "in128_out64_c8_rinf", "in128_out64_c32_r4"]
    assert points[-1].label == "in512_out64_c32_rinf"
    assert math.isinf(points[-1].request_rate)
    twice = s.model_copy(update={"bench_max_concurrency": [8, 8, 32]})
    assert sweep_points(twice) == points  # a value listed twice is measured once
    args = flags(bench_args(s, base_url="http://x:1", tag="t", output_file=Path("o"), pd=False,
                            point=points[2]))  # fmt: skip
    assert args["--random-input-len"] == ("128",)
    assert args["--max-concurrency"] == ("32",)
    assert args["--request-rate"] == ("4",)


def test_bench_without_point_uses_the_first() -> None:
    s = load_settings(None, {}, {"BENCH_INPUT_LEN": "256,1024"}).settings
    args = flags(bench_args(s, base_url="http://x:1", tag="t", output_file=Path("o"), pd=False))
    assert args["--random-input-len"] == ("256",)


def xpyd(num_prefill: int, num_decode: int, **more: str) -> Settings:
    env = {"NUM_PREFILL": str(num_prefill), "NUM_DECODE": str(num_decode),
           "PREFILL_HOST": "127.0.0.1", "DECODE_HOST": "127.0.0.1",
           "PREFILL_PORT": "31000", "DECODE_PORT": "32000", **more}  # fmt: skip
    return load_settings(None, {}, env).settings


def test_xpyd_workers_get_their_own_ports_and_bootstrap_ports() -> None:
    s = xpyd(2, 3, PREFILL_GPUS="0,1", DECODE_GPUS="2,3,4")
    prefill, decode = server_specs(s, "prefill"), server_specs(s, "decode")
    assert [(p.name, p.port, p.bootstrap_port, p.gpus) for p in prefill] == [
        ("sglang-prefill-0", 31000, 8998, "0"), ("sglang-prefill-1", 31001, 8999, "1")]
    assert [(d.name, d.port, d.bootstrap_port, d.gpus) for d in decode] == [
        ("sglang-decode-0", 32000, None, "2"), ("sglang-decode-1", 32001, None, "3"),
        ("sglang-decode-2", 32002, None, "4")]  # fmt: skip
    assert flags(list(prefill[1].args))["--disaggregation-bootstrap-port"] == ("8999",)
    assert flags(list(prefill[1].args))["--port"] == ("31001",)
    assert "--disaggregation-bootstrap-port" not in flags(list(decode[2].args))


def test_router_lists_every_worker_in_order() -> None:
    args = list(router_spec(xpyd(2, 3)).args)
    prefills = [args[i + 1 : i + 3] for i, w in enumerate(args) if w == "--prefill"]
    decodes = [args[i + 1] for i, w in enumerate(args) if w == "--decode"]
    assert prefills == [["http://127.0.0.1:31000", "8998"], ["http://127.0.0.1:31001", "8999"]]
    assert decodes == ["http://127.0.0.1:32000", "http://127.0.0.1:32001",
                       "http://127.0.0.1:32002"]  # fmt: skip


def test_one_gpu_list_for_fewer_ids_than_workers() -> None:
    s = xpyd(1, 2, DECODE_GPUS="0")
    assert [d.gpus for d in server_specs(s, "decode")] == ["0", "0"]


@pytest.mark.parametrize("role", ["agg", "prefill", "decode"])
def test_simulate_switches_the_module_and_adds_the_profile(settings: Settings, role: Role) -> None:
    real = server_specs(settings, role)[0]
    sim_settings = settings.model_copy(update={"simulate": True, "sim_profile": "a100-qwen2.5-3b",
                                               "sim_args": "--sim-seed 3"})  # fmt: skip
    sim = server_specs(sim_settings, role)[0]
    assert (real.module, sim.module) == (SGLANG_SERVER_MODULE, SIM_SERVER_MODULE)
    assert sim.args == (*real.args, "--sim-profile", "a100-qwen2.5-3b", "--sim-seed", "3")
    assert (sim.host, sim.port, sim.bootstrap_port) == (real.host, real.port, real.bootstrap_port)


def test_extra_args_come_last_common_then_role(settings: Settings) -> None:
    s = settings.model_copy(update={"extra_server_args": "--tp-size 2",
                                    "prefill_extra_args": "--chunked-prefill-size '4096'",
                                    "router_extra_args": "--policy cache_aware",
                                    "bench_extra_args": "--disable-tqdm"})  # fmt: skip
    assert list(server_specs(s, "prefill")[0].args[-4:]) == [
        "--tp-size", "2", "--chunked-prefill-size", "4096"]
    assert list(server_specs(s, "decode")[0].args[-2:]) == ["--tp-size", "2"]
    assert list(router_spec(s).args[-2:]) == ["--policy", "cache_aware"]
    assert bench_args(s, base_url="http://x:1", tag="t", output_file=Path("o"),
                      pd=False)[-1] == "--disable-tqdm"  # fmt: skip


def test_optional_server_flags(settings: Settings) -> None:
    s = settings.model_copy(update={"tokenizer_path": "/tok", "transfer_backend": "nixl",
                                    "ib_device": "", "prefill_mem_fraction": 0.5,
                                    "mem_fraction": 0.45})  # fmt: skip
    prefill = flags(list(server_specs(s, "prefill")[0].args))
    assert prefill["--tokenizer-path"] == ("/tok",)
    assert prefill["--disaggregation-transfer-backend"] == ("nixl",)
    assert "--disaggregation-ib-device" not in prefill
    assert prefill["--mem-fraction-static"] == ("0.5",)
    assert flags(list(server_specs(s, "decode")[0].args))["--mem-fraction-static"] == ("0.45",)
    bench = flags(bench_args(s, base_url="http://x:1", tag="t", output_file=Path("o"), pd=True))
    assert bench["--tokenizer"] == ("/tok",)


def test_launch_args_is_what_the_spec_runs(settings: Settings) -> None:
    assert tuple(launch_args(settings, "decode")) == server_specs(settings, "decode")[0].args


def test_smg_router_module(settings: Settings) -> None:
    spec = router_spec(settings.model_copy(update={"router_impl": "smg"}))
    assert spec.argv()[:3] == ["python3", "-m", "smg.launch_router"]
