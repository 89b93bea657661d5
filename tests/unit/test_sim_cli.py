"""The simulator's command line: SGLang's flag names and defaults, one-line errors."""

from __future__ import annotations

import pytest

from sglbench.errors import ConfigError
from sglbench.sim.cli import main
from sglbench.sim.config import SimArgs, parse_args


def test_defaults_are_sglangs() -> None:
    args, ignored = parse_args([])
    assert ignored == []
    assert (args.host, args.port, args.tp_size) == ("127.0.0.1", 30000, 1)
    assert args.disaggregation_mode == "null"
    assert args.disaggregation_bootstrap_port == 8998
    assert args.disaggregation_transfer_backend == "mooncake"
    assert args.mem_fraction_static is None and args.max_total_tokens is None
    assert args.sim_profile == "gh200-qwen2.5-3b"


def test_a_launch_server_command_line_parses_unchanged() -> None:
    argv = [
        "--model-path", "Qwen/Qwen2.5-3B-Instruct", "--host", "0.0.0.0", "--port", "30001",
        "--disaggregation-mode", "decode", "--disaggregation-transfer-backend", "nixl",
        "--disaggregation-ib-device", "mlx5_0", "--mem-fraction-static", "0.45",
        "--tp-size", "2", "--trust-remote-code", "--attention-backend", "fa3",
        "--chunked-prefill-size", "-1",
    ]  # fmt: skip
    args, ignored = parse_args(argv)
    assert args.disaggregation_mode == "decode"
    assert args.disaggregation_ib_device == "mlx5_0"
    assert (args.port, args.tp_size, args.mem_fraction_static) == (30001, 2, 0.45)
    assert args.chunked_prefill_size == -1
    # Unknown SGLang flags are kept with their values, to be reported in one warning line.
    assert ignored == ["--trust-remote-code", "--attention-backend", "fa3"]


def test_model_name_is_served_name_or_path() -> None:
    assert SimArgs(model_path="m").model_name == "m"
    assert SimArgs(model_path="m", served_model_name="s").model_name == "s"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--port", "0"], "--port"),
        (["--port", "abc"], "--port"),
        (["--tp-size", "0"], "--tp-size"),
        (["--mem-fraction-static", "0"], "--mem-fraction-static"),
        (["--max-running-requests", "0"], "--max-running-requests"),
        (["--chunked-prefill-size", "0"], "--chunked-prefill-size"),
        (["--disaggregation-mode", "both"], "--disaggregation-mode"),
        (["--sim-time-scale", "0"], "--sim-time-scale"),
        (["--sim-fail-rate", "1.5"], "--sim-fail-rate"),
        (["--sim-fail-after", "0"], "--sim-fail-after"),
        (["--sim-startup-delay", "-1"], "--sim-startup-delay"),
        (["--sim-profile", "tpu"], "--sim-profile"),
        (["--sim-seeed", "1"], "--sim-seeed"),
        (["--disaggregation-mode", "prefill", "--port", "8998"], "--disaggregation-bootstrap-port"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        parse_args(argv)


def test_main_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sim-profile", "tpu-v9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--sim-profile 'tpu-v9' is unknown" in err and "gh200-qwen2.5-3b" in err
