"""The bench client's setup: offline checks, tokenizer choice, tags, the client-limit flag."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest

from sglbench.errors import ConfigError
from sglbench.execute import bench
from sglbench.execute import target as target_module
from sglbench.execute.client_worker import PointOutcome
from sglbench.execute.logs import tail
from sglbench.execute.target import Target
from sglbench.plan.client import SHAREGPT_FILE, SHAREGPT_REPO, client_setup
from sglbench.plan.sweep import bench_tag, sweep_points
from sglbench.settings import Settings, load_settings


def make(**keys: str) -> Settings:
    """Settings from KEY=value overrides only (no .env, no environment)."""
    return load_settings(None, {}, keys).settings


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache, so nothing on this machine decides what counts as cached."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def cache_file(cache: Path, repo: str, filename: str, kind: str = "datasets") -> None:
    """Put ``filename`` of ``repo`` into the HF cache layout, as a download would."""
    root = cache / f"{kind}--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("abc123")
    snapshot = root / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_text("[]")


def test_random_dataset_without_sharegpt_is_a_one_line_error_naming_the_ways_out() -> None:
    with pytest.raises(ConfigError) as err:
        client_setup(make(BENCH_DATASET="random", SIMULATE="true"), dry_run=True)
    message = str(err.value)
    assert "\n" not in message
    assert "BENCH_DATASET=random-ids" in message and "BENCH_DATASET_PATH" in message


def test_a_cached_sharegpt_makes_random_work_offline(empty_hf_cache: Path) -> None:
    cache_file(empty_hf_cache, SHAREGPT_REPO, SHAREGPT_FILE)
    client = client_setup(make(BENCH_DATASET="random", SIMULATE="true"), dry_run=True)
    assert client.offline and client.env["HF_HUB_OFFLINE"] == "1"


def test_a_missing_dataset_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BENCH_DATASET_PATH="):
        client_setup(make(BENCH_DATASET_PATH=str(tmp_path / "nope.json")))


def test_simulator_without_tokenizer_path_gets_the_offline_tokenizer() -> None:
    client = client_setup(make(BENCH_DATASET="random-ids", SIMULATE="true"), dry_run=True)
    assert client.extra_args[0] == "--tokenizer"
    assert client.extra_args[1].endswith("qwen2.5-tokenizer")
    assert client.offline


def test_a_hub_model_without_cache_leaves_the_hub_reachable() -> None:
    client = client_setup(make(BENCH_DATASET="random-ids"))
    assert not client.offline and "HF_HUB_OFFLINE" not in client.env
    assert not client.tokenizer_local and client.extra_args == ()


def test_a_missing_tokenizer_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TOKENIZER_PATH="):
        client_setup(make(BENCH_DATASET="random-ids", TOKENIZER_PATH=str(tmp_path / "x")))


def test_the_token_reaches_the_client_but_never_the_shown_command(tmp_path: Path) -> None:
    settings = make(BENCH_DATASET="random-ids", TOKENIZER_PATH=str(tmp_path),
                    HF_TOKEN="hf_supersecret")  # fmt: skip
    client = client_setup(settings)
    assert client.env["HF_TOKEN"] == "hf_supersecret"
    target = Target("http://127.0.0.1:1", False, "agg server")
    argv = bench.client_argv(settings, client, target=target, tag="t",
                             output_file=tmp_path / "t.jsonl", point=sweep_points(settings)[0])
    line = bench.shell_line(client, argv)
    assert "hf_supersecret" not in line
    assert line.startswith("HF_HUB_OFFLINE=1 python -m sglang.benchmark.serving ")


@pytest.mark.parametrize("ignore_eos", ["true", "false"])
def test_agg_and_pd_get_the_same_workload_flags(tmp_path: Path, ignore_eos: str) -> None:
    """The original forgot --ignore-eos for agg; both modes now send the same workload."""
    settings = make(BENCH_DATASET="random-ids", SIMULATE="true", BENCH_IGNORE_EOS=ignore_eos)
    client = client_setup(settings, dry_run=True)
    point = sweep_points(settings)[0]
    out = tmp_path / "x.jsonl"
    agg = bench.client_argv(settings, client, target=Target("http://a:1", False, ""),
                            tag="t", output_file=out, point=point)
    pd = bench.client_argv(settings, client, target=Target("http://a:1", True, ""),
                           tag="t", output_file=out, point=point)
    # SGLang 0.5.23's client ignores EOS unless told --disable-ignore-eos.
    assert ("--disable-ignore-eos" in agg) == (ignore_eos == "false")
    assert "--pd-separated" in pd and "--pd-separated" not in agg
    assert [a for a in pd if a != "--pd-separated"] == agg


def test_tags_in_a_sweep_carry_the_point_label() -> None:
    points = sweep_points(make(BENCH_MAX_CONCURRENCY="8,32", BENCH_INPUT_LEN="512"))
    assert bench_tag("agg_cg1n1", points[0], single=True) == "agg_cg1n1"
    assert [bench_tag("t", p, single=False) for p in points] == [
        "t_in512_out128_c8_rinf", "t_in512_out128_c32_rinf"]


@pytest.mark.parametrize("tag", ["", "../x", "a/b", "a b", "-x"])
def test_a_tag_that_cannot_name_a_file_is_refused(tag: str) -> None:
    with pytest.raises(ConfigError, match="--tag"):
        bench.check_tag(tag)


def test_the_python_client_is_flagged_near_one_busy_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 4)
    python_client = make()
    assert bench.client_limited(0.95, python_client)
    assert not bench.client_limited(0.5, python_client)
    # The Rust client parses streams on every core: one busy core is not its limit.
    rust_client = make(BENCH_RUST_CLIENT="true")
    assert not bench.client_limited(0.95, rust_client)
    assert bench.client_limited(3.8, rust_client)


def test_cores_is_cpu_time_over_the_measured_span() -> None:
    outcome = PointOutcome(ok=True, error=None, cpu_s=3.0, measured_s=4.0, phase="load",
                           seconds=6.0)  # fmt: skip
    assert outcome.cores == pytest.approx(0.75)


def test_tail_keeps_the_last_lines_of_a_progress_bar_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("a\r b\r c\n\nerror: boom\n")
    assert tail(log, 2) == " c\nerror: boom"
    assert tail(tmp_path / "missing.log") == ""


def test_a_hub_failure_of_the_client_names_the_tokenizer_and_the_fix(tmp_path: Path) -> None:
    settings = make(BENCH_DATASET="random-ids")
    client = client_setup(settings)
    log = tmp_path / "p.log"
    # The last lines SGLang 0.5.23's client prints when the hub is unreachable (measured).
    log.write_text("  File \".../transformers/utils/hub.py\", line 620, in cached_files\n"
                   "OSError: We couldn't connect to 'https://huggingface.co' to load the files, "
                   "and couldn't find them in the cached files.\n")
    outcome = PointOutcome(ok=False, error="the bench client exited with 1", cpu_s=0.0,
                           measured_s=0.0, phase="whole", seconds=1.0)  # fmt: skip
    result = bench.PointResult(sweep_points(settings)[0], "t", outcome, None, False, log)
    message = bench.failure_message(result, client)
    assert "'Qwen/Qwen2.5-3B-Instruct'" in message and "TOKENIZER_PATH" in message
    assert "\n" not in message


@pytest.mark.parametrize(("info", "pd"), [
    ({"disaggregation_mode": "null", "model_path": "m"}, False),   # agg worker
    ({"disaggregation_mode": "decode"}, True),                     # a PD worker
    ({"prefill": [{}], "decode": [{}], "internal_states": []}, True),  # MiniLB
    ({"router_manager": True, "workers_count": 2}, None),          # sglang-router: no answer
])  # fmt: skip
def test_server_info_bodies_say_pd_or_not(info: dict[str, object], pd: bool | None) -> None:
    assert target_module._pd_from_info(info) is pd


def test_a_dry_run_warns_about_the_dataset_and_probes_nothing(tmp_path: Path) -> None:
    """The default dataset needs the hub: a dry run says so and still prints every command."""
    settings = make(SIMULATE="true", BENCH_MAX_CONCURRENCY="8,32", ROUTER_PORT="30009",
                    AGG_HOST="127.0.0.1", AGG_PORT="30010")  # fmt: skip
    lines = bench.describe_bench(settings, tag="t", base_url=None, mode="auto",
                                 output_file=tmp_path / "t.jsonl")
    assert lines[0].startswith("# warning: BENCH_DATASET=random: ")
    assert lines[1] == ("# a router answering at ROUTER_HOST:ROUTER_PORT (http://127.0.0.1:30009) "
                        "would be used instead, with --pd-separated")
    commands = lines[2:]
    assert len(commands) == 2  # one command per point
    assert all("--base-url http://127.0.0.1:30010 " in c and "--pd-separated" not in c
               for c in commands)
    with pytest.raises(ConfigError, match="BENCH_DATASET=random"):
        client_setup(settings, dry_run=True)  # a real run stops here


def test_a_dry_run_with_a_mode_shows_that_target(tmp_path: Path) -> None:
    settings = make(SIMULATE="true", BENCH_DATASET="random-ids", ROUTER_PORT="30009")
    (line,) = bench.describe_bench(settings, tag="t", base_url=None, mode="pd",
                                   output_file=tmp_path / "t.jsonl")
    assert "--base-url http://127.0.0.1:30009 " in line and "--pd-separated" in line
    given = bench.describe_bench(settings, tag="t", base_url="http://127.0.0.1:7/", mode="auto",
                                 output_file=tmp_path / "t.jsonl")
    assert given[0].startswith("# --pd-separated is added when http://127.0.0.1:7 turns out")
    assert "--base-url http://127.0.0.1:7 " in given[1]
