"""Settings: .env.example, precedence, sources, lists, secrets, typos, empty values."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from sglbench.display import is_secret
from sglbench.errors import ConfigError
from sglbench.settings import ENV_FILE_VAR, KEYS, Settings, load_settings, public_settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def test_env_example_lists_every_key_once_in_settings_order() -> None:
    keys = re.findall(r"^([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE)
    assert keys == list(KEYS)


def test_env_example_gives_the_defaults() -> None:
    loaded = load_settings(ENV_EXAMPLE, {})
    assert loaded.settings == Settings()
    assert set(loaded.sources.values()) == {".env"}


def test_env_example_has_a_comment_for_every_key() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"[A-Z0-9_]+=", line):
            # The key itself, or the block of keys it belongs to, is introduced by a comment.
            j = i - 1
            while j >= 0 and re.match(r"[A-Z0-9_]+=", lines[j]):
                j -= 1
            assert lines[j].startswith("#"), f"{line} has no comment above it"


def test_original_defaults() -> None:
    s = Settings()
    assert (s.model_path, s.sglang_image) == ("Qwen/Qwen2.5-3B-Instruct",
                                              "lmsysorg/sglang:dev-arm64")  # fmt: skip
    assert (s.prefill_host, s.prefill_port, s.decode_host, s.decode_port) == (
        "172.16.40.79", 30000, "172.16.40.80", 30001)
    assert (s.router_port, s.bootstrap_port, s.ib_device, s.transfer_backend) == (
        8000, 8998, "mlx5_0", "mooncake")
    assert (s.bench_num_prompts, s.bench_input_len, s.bench_output_len,
            s.bench_max_concurrency) == (200, (512,), (128,), (200,))  # fmt: skip
    assert math.isinf(s.bench_request_rate[0])
    assert [s.role(r).mem_fraction for r in ("agg", "prefill", "decode")] == [0.9, 0.8, 0.8]


def test_precedence_and_sources(tmp_path: Path) -> None:
    path = env_file(tmp_path, "BENCH_NUM_PROMPTS=10\nBENCH_SEED=5\nMODEL_PATH=from-env-file\n")
    loaded = load_settings(
        path,
        {"BENCH_NUM_PROMPTS": "20", "MODEL_PATH": "from-environment", "PATH": "/bin"},
        {"MODEL_PATH": "from-command-line"},
    )
    s = loaded.settings
    assert (s.bench_num_prompts, s.bench_seed, s.model_path) == (20, 5, "from-command-line")
    assert loaded.sources == {"BENCH_NUM_PROMPTS": "environment", "BENCH_SEED": ".env",
                              "MODEL_PATH": "command line"}  # fmt: skip
    rows = {key: (value, source) for key, value, source in loaded.rows()}
    assert rows["BENCH_SEED"] == ("5", ".env")
    assert rows["ROUTER_PORT"] == ("8000", "default")
    assert list(rows) == list(KEYS)


def test_missing_env_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "absent.env", {}).settings == Settings()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("512", (512,)), ("128,512", (128, 512)), ("8, 32 128", (8, 32, 128)), ("64,", (64,))],
)
def test_lists_for_sweeps(raw: str, expected: tuple[int, ...]) -> None:
    s = load_settings(None, {"BENCH_INPUT_LEN": raw}).settings
    assert s.bench_input_len == expected


def test_rates_accept_inf() -> None:
    s = load_settings(None, {}, {"BENCH_REQUEST_RATE": "2.5, inf"}).settings
    assert s.bench_request_rate[0] == 2.5 and math.isinf(s.bench_request_rate[1])
    assert public_settings(s)["BENCH_REQUEST_RATE"] == "2.5,inf"
    again = load_settings(None, {}, {"BENCH_REQUEST_RATE": "Infinity"}).settings
    assert math.isinf(again.bench_request_rate[0])


@pytest.mark.parametrize(("key", "value", "message"), [
    ("BENCH_MAX_CONCURRENCY", "8,8", "8 is listed twice"),
    ("BENCH_REQUEST_RATE", "inf,Infinity", "inf is listed twice"),
    ("BENCH_INPUT_LEN", "512 1024 512", "512 is listed twice"),
    ("BENCH_NUM_PROMPTS", "1e12", "expected a whole number"),
    ("BENCH_NUM_PROMPTS", "1000000000", "less than or equal to 1000000"),
    ("READY_TIMEOUT_S", "inf", "finite"),
    ("BENCH_REQUEST_RATE", "1e9", "up to 1e6"),
])  # fmt: skip
def test_sweep_lists_and_sizes_are_bounded(key: str, value: str, message: str) -> None:
    """Issue 9: values that were accepted silently (or ran out of memory at every point)."""
    with pytest.raises(ConfigError, match=rf"^{key}=.*{message}"):
        load_settings(None, {}, {key: value})


def test_secret_masked_in_rows_and_absent_from_public_settings() -> None:
    loaded = load_settings(None, {"HF_TOKEN": "hf_verysecret"})
    assert loaded.settings.hf_token is not None
    assert loaded.settings.hf_token.get_secret_value() == "hf_verysecret"
    rows = {key: value for key, value, _ in loaded.rows()}
    assert rows["HF_TOKEN"] == "********"
    assert "hf_verysecret" not in repr(loaded.settings)
    public = public_settings(loaded.settings)
    assert "HF_TOKEN" not in public
    assert "hf_verysecret" not in str(public)
    assert is_secret("HF_TOKEN") and not is_secret("MODEL_PATH")


@pytest.mark.parametrize(
    ("where", "key", "suggestion"),
    [(".env", "BENCH_NUM_PROMT", "BENCH_NUM_PROMPTS"),
     ("environment", "BENCH_NUM_PROMT", "BENCH_NUM_PROMPTS"),
     ("command line", "PREFIL_HOST", "PREFILL_HOST"),
     (".env", "router_port", "ROUTER_PORT")],
)  # fmt: skip
def test_typo_key_names_the_closest_key(
    tmp_path: Path, where: str, key: str, suggestion: str
) -> None:
    with pytest.raises(ConfigError) as err:
        if where == ".env":
            load_settings(env_file(tmp_path, f"{key}=1\n"), {})
        elif where == "environment":
            load_settings(None, {key: "1"})
        else:
            load_settings(None, {}, {key: "1"})
    assert f"unknown key {key}; did you mean {suggestion}?" in str(err.value)


def test_foreign_environment_variables_are_ignored() -> None:
    environ = {"PATH": "/bin", "TAG": "x", ENV_FILE_VAR: "/e", "SGLBENCH_DEBUG": "1",
               "SGLBENCH_DRY_RUN": "1", "DOCKER_HOST": "unix:///x", "A100_HOST": "1.2.3.4"}
    assert load_settings(None, environ).settings == Settings()


def test_empty_values_mean_unset(tmp_path: Path) -> None:
    text = "MODEL_PATH=\nBENCH_INPUT_LEN=\nHF_TOKEN=\nMEM_FRACTION=\nPREFILL_HOST=  \n"
    s = load_settings(env_file(tmp_path, text), {"ROUTER_PORT": ""}).settings
    assert s == Settings()


def test_empty_value_is_no_value_at_any_level(tmp_path: Path) -> None:
    loaded = load_settings(env_file(tmp_path, "BENCH_SEED=5\nTOKENIZER_PATH=\n"),
                           {"BENCH_SEED": ""}, {"BENCH_SEED": " "})  # fmt: skip
    assert loaded.settings.bench_seed == 5
    assert loaded.sources == {"BENCH_SEED": ".env"}  # TOKENIZER_PATH: still the default


def test_empty_ib_device_means_no_device(tmp_path: Path) -> None:
    assert load_settings(env_file(tmp_path, "IB_DEVICE=\n"), {}).settings.ib_device == ""


def test_env_file_quotes_comments_and_export(tmp_path: Path) -> None:
    text = ('export MODEL_PATH="/models/my model"  # a comment\n'
            "# BENCH_NUM_PROMPTS=1\nEXTRA_SERVER_ARGS='--max-running-requests 2'\n")  # fmt: skip
    s = load_settings(env_file(tmp_path, text), {}).settings
    assert (s.model_path, s.extra_server_args, s.bench_num_prompts) == (
        "/models/my model", "--max-running-requests 2", 200)


def test_unparsable_env_line_names_file_line_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env_file(tmp_path, "MODEL_PATH=m\nBENCH_NUM_PROMPTS 200\n"), {})
    assert f"{tmp_path / '.env'}:2: cannot parse the line of BENCH_NUM_PROMPTS" in str(err.value)
    assert "200" not in str(err.value)


@pytest.mark.parametrize("line", ['HF_TOKEN="hf_SECRETabc', "HF_TOKEN hf_SECRETabc",
                                  "export HF_TOKEN 'hf_SECRETabc'"])
def test_unparsable_line_never_echoes_its_value(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env_file(tmp_path, f"MODEL_PATH=m\n{line}\nBENCH_SEED=2\n"), {})
    assert "SECRET" not in str(err.value) and "hf_" not in str(err.value)
    assert f"{tmp_path / '.env'}:2: cannot parse the line of HF_TOKEN" in str(err.value)


def test_bad_value_names_key_value_source_and_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env_file(tmp_path, "ROUTER_IMPL=nginx\n"), {})
    message = str(err.value)
    assert message.startswith("ROUTER_IMPL='nginx' (.env): ")
    assert "'rust', 'mini-lb' or 'smg'" in message
    assert "\n" not in message


def test_role_runtime_and_mem_fraction_fallbacks() -> None:
    s = load_settings(None, {}, {"RUNTIME": "docker", "PREFILL_RUNTIME": "process",
                                 "MEM_FRACTION": "0.45", "DECODE_MEM_FRACTION": "0.7"}).settings
    assert [s.role(r).runtime for r in ("agg", "prefill", "decode")] == [
        "docker", "process", "docker"]
    assert [s.role(r).mem_fraction for r in ("agg", "prefill", "decode")] == [0.45, 0.45, 0.7]


def test_settings_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        Settings().bench_seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"PREFILL_HOST": "localhost", "DECODE_HOST": "127.0.0.1", "NUM_PREFILL": "2"},
      "DECODE_PORT=30001: decode worker 0 would listen on 127.0.0.1:30001, already used by "
      "prefill worker 1 (PREFILL_PORT)"),
     ({"BOOTSTRAP_PORT": "29999", "NUM_PREFILL": "2"},
      "BOOTSTRAP_PORT=29999: the bootstrap port of prefill worker 1 would listen on "
      "172.16.40.79:30000, already used by prefill worker 0 (PREFILL_PORT)"),
     ({"ROUTER_PROMETHEUS_PORT": "8000"}, "ROUTER_PROMETHEUS_PORT=8000: the router's metrics"),
     ({"DECODE_PORT": "65535", "NUM_DECODE": "3"},
      "DECODE_PORT=65535: NUM_DECODE=3 workers need ports up to 65537"),
     ({"PREFILL_EXTRA_ARGS": "--disaggregation-bootstrap-port=9000"},
      "PREFILL_EXTRA_ARGS: --disaggregation-bootstrap-port is set from BOOTSTRAP_PORT"),
     ({"BENCH_EXTRA_ARGS": "--seed 3"}, "BENCH_EXTRA_ARGS: --seed is set from BENCH_SEED"),
     ({"ROUTER_EXTRA_ARGS": "--port 1"}, "ROUTER_EXTRA_ARGS: --port is set from ROUTER_PORT"),
     ({"SIMULATE": "true", "SIM_ARGS": "--sim-bogus 1"},
      "SIM_ARGS='--sim-bogus 1': unknown simulator flag --sim-bogus")],
)  # fmt: skip
def test_settings_that_do_not_fit_together(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {}, overrides)
    assert str(err.value).startswith(message)


def test_what_fits_together() -> None:
    # Agg and prefill share a port in the original (never at once); other hosts never collide;
    # MiniLB has no metrics listener; SIM_ARGS only matters when simulating.
    s = load_settings(None, {}, {"ROUTER_IMPL": "mini-lb", "ROUTER_PROMETHEUS_PORT": "8000",
                                 "SIM_ARGS": "--sim-bogus", "NUM_PREFILL": "4",
                                 "NUM_DECODE": "4"}).settings  # fmt: skip
    assert (s.agg_port, s.prefill_port, s.decode_port) == (30000, 30000, 30001)
