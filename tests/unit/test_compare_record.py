"""Run naming, resume bookkeeping, the workload fingerprint and the secret-free run record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from sglbench.errors import ConfigError
from sglbench.execute import compare as experiment
from sglbench.execute import provenance
from sglbench.execute.bench import PointResult
from sglbench.execute.client_worker import PointOutcome
from sglbench.execute.docker import registry_digest
from sglbench.plan.client import client_setup
from sglbench.plan.sweep import point_tag, sweep_points, workload_of
from sglbench.plan.topology import run_topologies
from sglbench.record import jsonl
from sglbench.record.schema import ModeRecord, RunRecord, now
from sglbench.settings import Settings, load_settings

SECRET = "hf_TOPSECRETtoken123"


def make(tmp_path: Path, **keys: str) -> Settings:
    """Settings writing under ``tmp_path`` (no .env, no environment)."""
    base = {"RESULTS_DIR": str(tmp_path / "results"), "RUN_DIR": str(tmp_path / "run")}
    return load_settings(None, {}, {**base, **keys}).settings


def test_modes_are_named_as_in_the_run_directory(tmp_path: Path) -> None:
    plan = run_topologies(make(tmp_path), modes=["agg", "pd"])
    assert [(m.name, m.kind, m.gpus) for m in plan] == [("agg", "agg", 1), ("pd", "pd", 2)]
    xpyd = run_topologies(make(tmp_path, NUM_PREFILL="1", NUM_DECODE="3", DECODE_GPUS="0,1,2",
                               DECODE_PORT="30010"), modes=["pd"])  # fmt: skip
    assert [(m.name, m.gpus) for m in xpyd] == [("pd_1p3d", 4)]


@pytest.mark.parametrize("modes", [["agg", "agg"], ["xpyd"]])
def test_unknown_or_repeated_modes_are_refused(tmp_path: Path, modes: list[str]) -> None:
    with pytest.raises(ConfigError, match="--modes"):
        run_topologies(make(tmp_path), modes=modes)


def test_point_tags_name_mode_and_point(tmp_path: Path) -> None:
    settings = make(tmp_path, BENCH_MAX_CONCURRENCY="8,64", BENCH_REQUEST_RATE="inf,4")
    points = sweep_points(settings)
    assert len(points) == 4
    pd = run_topologies(settings, modes=["pd"])[0]
    assert point_tag(pd.name, points[1]) == "pd_in512_out128_c8_r4"


def write_rows(path: Path, tags: list[str], tail: str = "") -> None:
    path.write_text("".join(json.dumps({"tag": t, "completed": 1}) + "\n" for t in tags) + tail)


def test_resume_skips_exactly_the_points_with_a_row(tmp_path: Path) -> None:
    settings = make(tmp_path, BENCH_MAX_CONCURRENCY="4,8,16")
    agg = run_topologies(settings, modes=["agg"])[0]
    points = sweep_points(settings)
    out = tmp_path / "agg.jsonl"
    write_rows(out, [point_tag(agg.name, points[0]), "pd_in512_out128_c8_rinf"],
               tail="not json\n")
    left = experiment.pending_points(agg, points, jsonl.tags(out))
    assert [p.max_concurrency for p in left] == [8, 16]
    assert jsonl.tags(tmp_path / "missing.jsonl") == set()


def test_a_row_cut_short_by_a_kill_is_dropped_before_appending(tmp_path: Path) -> None:
    out = tmp_path / "agg.jsonl"
    write_rows(out, ["a", "b"], tail='{"tag": "c", "compl')
    assert jsonl.repair(out)
    assert jsonl.tags(out) == {"a", "b"}
    assert out.read_text().endswith("\n")
    assert not jsonl.repair(out)


def test_the_workload_fingerprint_ignores_only_the_concurrency_axis(tmp_path: Path) -> None:
    base = workload_of(make(tmp_path))
    assert set(base.model_dump()) >= {"dataset", "num_prompts", "input_len", "output_len",
                                      "range_ratio", "seed", "ignore_eos", "warmup",
                                      "request_rate"}  # fmt: skip
    assert base.diff(workload_of(make(tmp_path, BENCH_MAX_CONCURRENCY="1,2,3"))) == []
    changed = base.diff(workload_of(make(tmp_path, BENCH_SEED="7")))
    assert changed == ["seed: 1 -> 7"]
    # Written and read back (request rate inf becomes JSON Infinity), it is still the same.
    again = type(base).model_validate(json.loads(json.dumps(base.model_dump())))
    assert math.isinf(again.request_rate[0]) and again.diff(base) == []


def test_metadata_never_holds_the_token(tmp_path: Path) -> None:
    settings = make(tmp_path, HF_TOKEN=SECRET)
    agg = [ModeRecord.of(t) for t in run_topologies(settings, modes=["agg"])]
    meta = provenance.new_record(settings, run_id="r1", modes=agg)
    # A server that echoes the token back (in a value or under a token key) is scrubbed too.
    meta.servers = {"agg": {"env": f"HF_TOKEN={SECRET}", "hf_token": "x", "api_key": None}}
    run_dir = tmp_path / "results" / "r1"
    run_dir.mkdir(parents=True)
    path = meta.save(run_dir, provenance.secrets_of(settings))
    text = path.read_text()
    assert SECRET not in text and "HF_TOKEN" not in json.loads(text)["settings"]
    assert json.loads(text)["servers"]["agg"]["hf_token"] == "********"
    assert json.loads(text)["settings"]["BENCH_NUM_PROMPTS"] == "200"


def test_metadata_has_the_contract_keys(tmp_path: Path) -> None:
    settings = make(tmp_path, SIMULATE="true")
    agg = [ModeRecord.of(t) for t in run_topologies(settings, modes=["agg"])]
    meta = provenance.new_record(settings, run_id="r", modes=agg)
    written = meta.model_dump(by_alias=True)
    assert {"run_id", "started", "ended", "simulated", "workload", "settings", "versions",
            "servers", "git_commit", "modes", "forced_mismatch", "points"} <= set(written)
    assert written["modes"] == [{"name": "agg", "kind": "agg", "gpus": 1, "agg": 1, "prefill": 0,
                                 "decode": 0, "agg_tp": 1, "prefill_tp": 1, "decode_tp": 1}]
    assert meta.simulated is True and meta.versions["sglang"]
    assert meta.gpus == "none" or isinstance(meta.gpus, list)


def test_resuming_with_another_workload_is_refused_unless_forced(tmp_path: Path) -> None:
    settings = make(tmp_path)
    plan = run_topologies(settings, modes=["agg"])
    run_dir, meta = experiment.open_run(settings, plan, None, False)
    meta.save(run_dir)
    other = make(tmp_path, BENCH_INPUT_LEN="1024")
    with pytest.raises(ConfigError, match=r"--resume .*input_len: \[512\] -> \[1024\]"):
        experiment.open_run(other, plan, run_dir.name, False)
    same_dir, forced = experiment.open_run(other, plan, run_dir.name, True)
    assert same_dir == run_dir and forced.forced_mismatch is True
    _, same = experiment.open_run(settings, plan, run_dir.name, False)
    assert same.forced_mismatch is False and len(same.resumed) == 1


@pytest.mark.parametrize(("key", "value"), [
    ("BENCH_BACKEND", "sglang-oai"), ("MODEL_PATH", "Qwen/Qwen2.5-7B-Instruct"),
    ("TOKENIZER_PATH", "/models/tok"), ("SIMULATE", "true"), ("SIM_PROFILE", "h100"),
    ("ROUTER_IMPL", "mini-lb"),
])  # fmt: skip
def test_resuming_with_another_setup_is_refused_unless_forced(
    tmp_path: Path, key: str, value: str
) -> None:
    settings = make(tmp_path, SIMULATE="false" if key == "SIMULATE" else "true")
    plan = run_topologies(settings, modes=["agg"])
    run_dir, meta = experiment.open_run(settings, plan, None, False)
    meta.save(run_dir)
    other = settings.model_copy(update={key.lower(): value if key != "SIMULATE" else True})
    with pytest.raises(ConfigError, match=rf"--resume .*the workload differs .*{key}: "):
        experiment.open_run(other, plan, run_dir.name, False)
    _, forced = experiment.open_run(other, plan, run_dir.name, True)
    assert forced.forced_mismatch is True
    assert forced.setup and meta.setup
    assert forced.setup[key] == meta.setup[key]  # the run's own setup is kept
    assert any(c.startswith(f"{key}: ") for c in forced.workload_changes[0].changes)


def test_a_re_measured_point_replaces_its_record(tmp_path: Path) -> None:
    settings = make(tmp_path)
    run_dir = tmp_path / "run1"
    agg = run_topologies(settings, modes=["agg"])[0]
    point = sweep_points(settings)[0]
    meta = RunRecord(run_id="r")
    failed = PointOutcome(ok=False, error="boom", cpu_s=0.0, measured_s=0.0, phase="whole",
                          seconds=1.0)  # fmt: skip
    fine = PointOutcome(ok=True, error=None, cpu_s=1.0, measured_s=2.0, phase="load", seconds=3.0)
    for outcome, row in ((failed, None), (fine, {"tag": "agg_x"})):
        result = PointResult(point, "agg_x", outcome, row, False, run_dir / "logs" / "agg_x.log",
                             now())  # fmt: skip
        meta.set_point(experiment.point_record(agg, result, num_prompts=200, run_dir=run_dir))
    (record,) = meta.points
    assert record.status == "ok" and record.client_cpu_cores == 0.5
    assert record.log == "logs/agg_x.log"
    # The report reads the newest record of a tag, also from files written before this fix.
    base = record.model_dump()
    old = RunRecord.model_validate({"run_id": "r", "points": [
        {**base, "client_limited": True}, {**base, "client_limited": False}]})
    found = old.point("agg_x")
    assert found is not None and found.client_limited is False


def test_a_row_adopted_after_an_interrupt_is_recorded_like_any_point(tmp_path: Path) -> None:
    settings = make(tmp_path)
    agg = run_topologies(settings, modes=["agg"])[0]
    point = sweep_points(settings)[0]
    tag = point_tag(agg.name, point)
    run = experiment._Run(settings, tmp_path, RunRecord(run_id="r"),
                          client_setup(make(tmp_path, BENCH_DATASET="random-ids")),
                          Console(quiet=True), None)  # fmt: skip
    run._adopt_rows(agg, [point], {tag})
    (record,) = run.record.points
    measured = experiment.point_record(agg, PointResult(
        point, tag, PointOutcome(True, None, 1.0, 1.0, "load", 1.0), {}, False,
        tmp_path / "x.log", "now"), num_prompts=200, run_dir=tmp_path)  # fmt: skip
    assert record.note and measured.note is None
    assert record.status == "ok" and record.client_cpu_cores is None
    run._adopt_rows(agg, [point], {tag})
    assert len(run.record.points) == 1  # adopted once


def test_resuming_an_unknown_run_names_it(tmp_path: Path) -> None:
    settings = make(tmp_path)
    with pytest.raises(ConfigError, match="--resume nope"):
        experiment.open_run(settings, run_topologies(settings, modes=["agg"]), "nope", False)


def test_two_runs_in_the_same_second_get_their_own_directories(tmp_path: Path) -> None:
    settings = make(tmp_path)
    plan = run_topologies(settings, modes=["agg"])
    first, _ = experiment.open_run(settings, plan, None, False)
    second, _ = experiment.open_run(settings, plan, None, False)
    assert first != second and first.is_dir() and second.is_dir()


def test_sweep_order_is_the_cross_product(tmp_path: Path) -> None:
    points = sweep_points(make(tmp_path, BENCH_INPUT_LEN="64,128", BENCH_MAX_CONCURRENCY="1,2"))
    assert [p.label for p in points][:2] == ["in64_out128_c1_rinf", "in64_out128_c2_rinf"]


def test_a_dry_run_shows_servers_and_one_client_line_per_point(tmp_path: Path) -> None:
    settings = make(tmp_path, SIMULATE="true", BENCH_DATASET="random-ids",
                    BENCH_MAX_CONCURRENCY="8,32")  # fmt: skip
    lines = experiment.describe_compare(settings, ["agg", "pd"])
    bench_lines = [line for line in lines if line.startswith("# bench ")]
    assert [line.split("\n")[0] for line in bench_lines] == [
        "# bench agg_in512_out128_c8_rinf", "# bench agg_in512_out128_c32_rinf",
        "# bench pd_in512_out128_c8_rinf", "# bench pd_in512_out128_c32_rinf"]
    assert "--pd-separated" in bench_lines[2] and "--pd-separated" not in bench_lines[0]
    assert f"--base-url http://{settings.router_host}:{settings.router_port}" in bench_lines[2]
    assert not Path(settings.results_dir).exists()  # nothing written


def test_a_resumed_dry_run_shows_only_the_points_still_missing(tmp_path: Path) -> None:
    settings = make(tmp_path, SIMULATE="true", BENCH_DATASET="random-ids",
                    BENCH_MAX_CONCURRENCY="8,32")  # fmt: skip
    run_dir, meta = experiment.open_run(settings, run_topologies(settings, modes=["agg", "pd"]),
                                        None, False)  # fmt: skip
    meta.save(run_dir)
    write_rows(run_dir / "agg.jsonl", ["agg_in512_out128_c8_rinf", "agg_in512_out128_c32_rinf"])
    write_rows(run_dir / "pd.jsonl", ["pd_in512_out128_c8_rinf"])
    before = sorted(p.name for p in run_dir.iterdir())
    lines = experiment.describe_compare(settings, ["agg", "pd"], resume=run_dir.name)
    shown = [line for line in lines if not line.startswith("## ")]
    assert shown[0] == f"# agg: every point is already measured in {run_dir / 'agg.jsonl'}"
    assert not any("sglang-agg" in line for line in lines)  # no server for a finished mode
    assert [line.split("\n")[0] for line in lines if line.startswith("# bench ")] == [
        "# bench pd_in512_out128_c32_rinf"]
    assert f"--output-file {run_dir / 'pd.jsonl'}" in lines[-1]
    assert sorted(p.name for p in run_dir.iterdir()) == before  # a dry run writes nothing
    with pytest.raises(ConfigError, match="the workload differs"):
        experiment.describe_compare(make(tmp_path, SIMULATE="true", BENCH_DATASET="random-ids",
                                         BENCH_NUM_PROMPTS="7"), ["pd"], resume=run_dir.name)


def test_an_unreachable_docker_engine_never_stops_a_run(tmp_path: Path) -> None:
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    settings = make(tmp_path, RUNTIME="docker", AGG_DOCKER_HOST=nowhere,
                    PREFILL_DOCKER_HOST=nowhere, DECODE_DOCKER_HOST=nowhere)  # fmt: skip
    found = provenance.versions(settings)
    assert found["image"] == settings.sglang_image
    assert found[f"image_id@{nowhere}"] == found[f"image_digest@{nowhere}"]
    assert found[f"image_id@{nowhere}"].startswith("unavailable (AGG_DOCKER_HOST=")
    assert "image" not in provenance.versions(make(tmp_path, RUNTIME="process"))  # no image


@pytest.mark.parametrize(
    ("image", "digests", "expected"),
    [
        ("lmsysorg/sglang:v0.5", ["other/x@sha256:1", "lmsysorg/sglang@sha256:2"],
         "lmsysorg/sglang@sha256:2"),
        ("reg:5000/team/sglang:dev", ["reg:5000/team/sglang@sha256:3"],
         "reg:5000/team/sglang@sha256:3"),
        ("lmsysorg/sglang@sha256:4", ["lmsysorg/sglang@sha256:4"], "lmsysorg/sglang@sha256:4"),
        ("retagged:1", ["upstream/sglang@sha256:5"], "upstream/sglang@sha256:5"),
        ("built-here:1", [], "none (not from a registry)"),
    ],
)
def test_the_registry_digest_of_the_image(image: str, digests: list[str], expected: str) -> None:
    assert registry_digest(image, digests) == expected


LEGACY_RUN = Path(__file__).resolve().parents[1] / "data" / "legacy-run"


def test_a_run_record_of_the_first_layout_loads_into_the_types() -> None:
    """metadata.json as the first layout's `invoke compare` wrote it (2026-12-01, the demo)."""
    old = json.loads((LEGACY_RUN / "metadata.json").read_text())
    assert old["modes"] == ["agg", "pd"] and old["gpus_per_mode"] == {"agg": 1, "pd": 2}
    record = RunRecord.load(LEGACY_RUN)
    assert record is not None and record.schema_ == 1
    assert [(m.name, m.kind, m.gpus, m.prefill, m.decode) for m in record.modes] == [
        ("agg", "agg", 1, 0, 0), ("pd", "pd", 2, 1, 1)]
    assert [m.topology.name for m in record.modes] == ["agg", "pd"]
    assert record.workload is not None and record.workload.num_prompts == 40
    assert math.isinf(record.workload.request_rate[0])
    assert record.setup and record.setup["SIMULATE"] is True
    assert [p.tag for p in record.points] == [p["tag"] for p in old["points"]]
    assert all(p.status == "ok" and p.client_cpu_phase == "load" for p in record.points)
    assert record.simulated and set(record.servers) == {"agg", "prefill", "decode"}


def test_a_first_layout_record_saved_again_keeps_what_it_held(tmp_path: Path) -> None:
    record = RunRecord.load(LEGACY_RUN)
    assert record is not None
    record.save(tmp_path)
    again = RunRecord.load(tmp_path)
    assert again is not None and again.model_dump() == record.model_dump()


def test_a_file_that_is_not_a_run_record_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text(json.dumps({"run_id": "r", "points": [{"tag": 1}]}))
    with pytest.raises(Exception, match=r"metadata.json: not a run record \(points\.0\."):
        RunRecord.load(tmp_path)
