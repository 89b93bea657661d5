"""``sglbench.cli``, the machinery behind the tasks, called in-process: settings layers, --set,
one-line errors, the argument parsers, and what compare, demo and report print.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from sglbench import commands as cli
from sglbench.errors import ConfigError, DockerError
from sglbench.plan.bench import BENCH_MODULE
from sglbench.results.checks import Finding
from sglbench.settings import ENV_FILE_VAR, load_settings
from tests.conftest import REFERENCE, needs_reference


def test_settings_layers_file_then_environment_then_set(tmp_path: Path) -> None:
    env_file = tmp_path / "my.env"
    env_file.write_text("AGG_PORT=31000\nDECODE_PORT=31001\nPREFILL_PORT=31002\n")
    environ = {ENV_FILE_VAR: str(env_file), "DECODE_PORT": "32001", "PATH": "/bin"}
    loaded = cli.load(["PREFILL_PORT=33002"], environ=environ)
    s = loaded.settings
    assert (s.agg_port, s.decode_port, s.prefill_port) == (31000, 32001, 33002)
    assert loaded.sources["PREFILL_PORT"] == "command line"
    # An explicit file (the demo's) wins over $SGLBENCH_ENV_FILE.
    other = tmp_path / "other.env"
    other.write_text("AGG_PORT=34000\n")
    assert cli.load(None, env_file=other, environ=environ).settings.agg_port == 34000


def test_a_settings_file_named_by_the_environment_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{ENV_FILE_VAR}=.*nope.env: no such file"):
        cli.load(None, environ={ENV_FILE_VAR: str(tmp_path / "nope.env")})


def test_set_items_keep_everything_after_the_first_equals_sign() -> None:
    assert cli.overrides(["EXTRA_SERVER_ARGS=--x=1 --y", "AGG_PORT=1", "AGG_PORT=2"]) == {
        "EXTRA_SERVER_ARGS": "--x=1 --y", "AGG_PORT": "2"}
    for bad in ("AGG_PORT", "=3"):
        with pytest.raises(ConfigError, match=f"--set {bad}: expected KEY=VALUE"):
            cli.overrides([bad])


def test_user_errors_become_one_line_and_their_exit_code() -> None:
    with pytest.raises(Exit) as caught, cli.user_errors(environ={}):
        raise ConfigError("AGG_PORT=0: must be >= 1")
    assert (caught.value.message, caught.value.code) == ("error: AGG_PORT=0: must be >= 1", 2)
    with pytest.raises(Exit) as caught, cli.user_errors(environ={}):
        raise DockerError("engine unreachable")
    assert caught.value.code == 1
    with pytest.raises(Exit) as caught, cli.user_errors(environ={}):
        raise KeyboardInterrupt
    assert (caught.value.message, caught.value.code) == ("interrupted", 130)
    # --debug: the error itself, for its traceback.
    with pytest.raises(ConfigError), cli.user_errors(environ={cli.DEBUG_VAR: "1"}):
        raise ConfigError("AGG_PORT=0")


def test_file_system_errors_become_one_line_naming_the_path() -> None:
    with pytest.raises(Exit) as caught, cli.user_errors(environ={}):
        Path("/dev/null/x").mkdir(parents=True)
    assert (caught.value.message, caught.value.code) == ("error: /dev/null/x: Not a directory", 1)
    with pytest.raises(NotADirectoryError), cli.user_errors(environ={cli.DEBUG_VAR: "1"}):
        Path("/dev/null/x").mkdir(parents=True)


def test_mode_flags() -> None:
    # cli only splits; plan.modes.run_modes is the one check (see test_experiment).
    assert cli.split_modes(" pd , agg ") == ["pd", "agg"]
    assert cli.split_modes("agg,disagg") == ["agg", "disagg"]
    assert cli.split_modes("") == [""]
    assert [cli.parse_bench_mode(m) for m in ("auto", "agg", "pd")] == ["auto", "agg", "pd"]
    with pytest.raises(ConfigError, match="--mode both: expected auto, agg or pd"):
        cli.parse_bench_mode("both")


def test_compare_dry_run_prints_every_command_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(None, {}, {
        "SIMULATE": "true", "RUNTIME": "process", "BENCH_DATASET": "random-ids",
        "BENCH_MAX_CONCURRENCY": "8,32",
        "RESULTS_DIR": str(tmp_path / "results"), "RUN_DIR": str(tmp_path / "run")}).settings
    assert cli.compare_task(settings, "pd", "", False, True) is None
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("# ")] == [
        "sglang-prefill", "sglang-decode", "router", "bench", "bench"]
    assert out.count(f" -m {BENCH_MODULE} ") == 2 and out.count("--pd-separated") == 2
    assert f"{tmp_path / 'results'}/<run-id>/pd.jsonl" in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "run").exists()


def test_report_notes_count_findings_and_say_simulated() -> None:
    findings = [Finding("simulated", "info", "*", "sim"), Finding("short_outputs", "warning",
                "a", "short"), Finding("failed_requests", "error", "b", "3 failed")]  # fmt: skip
    assert cli.report_notes(findings, [], True) == [
        "sanity findings: 3 (1 info, 1 warning, 1 error; listed in the report)",
        "SIMULATED: numbers come from the sglbench simulator, not from GPUs"]
    assert cli.report_notes([], ["c8: seed 1 vs 2"], False) == [
        "sanity findings: 0", "workload mismatches: 1 (compared anyway: --force)"]


@needs_reference
def test_report_says_what_it_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "results" / "sim-1"
    run.mkdir(parents=True)
    for mode, source in (("agg", "agg"), ("pd", "pd_intra")):
        shutil.copy(REFERENCE / f"{source}_n100_in512_out128_c8.jsonl", run / f"{mode}.jsonl")
    (run / "metadata.json").write_text(json.dumps(
        {"run_id": "sim-1", "simulated": True, "gpus_per_mode": {"agg": 1, "pd": 2}}))
    settings = load_settings(None, {}, {"RESULTS_DIR": str(tmp_path / "results")}).settings
    cli.report_task(settings, None, "", False, dry_run=False)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"report: {tmp_path}/results/report/report.md",
                       f"report: {tmp_path}/results/report/report.html"]
    assert out[2].startswith("sanity findings: 1 (1 info;")
    assert out[3].startswith("SIMULATED: ")
    assert (tmp_path / "results" / "report" / "report.html").is_file()
