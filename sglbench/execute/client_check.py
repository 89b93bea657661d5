"""BENCH_EXTRA_ARGS checked by SGLang's own bench client parser, before any server starts.

Runs inside the client worker (which has imported ``sglang.benchmark.serving`` anyway): the
client's ``cli_main`` is called with the run's whole argv while its ``ArgumentParser`` raises
instead of exiting and its ``run_benchmark`` stops right after parsing, so argparse and the
client's own post-parse checks (--rust-client support, GSP options) judge the arguments and
nothing is sent. Nothing of SGLang's is copied: its functions are called, two of them swapped
for the call.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from typing import Any, NoReturn

_PROG = "sglang.benchmark.serving"


class _Rejected(Exception):
    """The client's parser (or a check after it) refused the arguments."""


class _Parsed(Exception):
    """Parsing and the client's own checks passed: ``run_benchmark`` was reached."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Rejected(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Rejected(message or f"exits with status {status} (help or version flags)")


def _reached(*args: Any, **kwargs: Any) -> NoReturn:
    raise _Parsed


def check_argv(serving: Any, argv: list[str]) -> str | None:
    """None when the client accepts ``argv``; else its one-line complaint."""
    saved = serving.ArgumentParser, serving.run_benchmark, sys.argv
    serving.ArgumentParser, serving.run_benchmark = _Parser, _reached
    sys.argv = [_PROG, *argv]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            serving.cli_main()
    except _Parsed:
        return None
    except _Rejected as exc:
        return str(exc).strip().splitlines()[-1] if str(exc).strip() else "rejected"
    except (SystemExit, ValueError) as exc:
        return str(exc) or "rejected"
    finally:
        serving.ArgumentParser, serving.run_benchmark, sys.argv = saved
    return "the client started a benchmark while only checking its arguments"
