"""``python -m sglbench.sim``: parse the command line (:mod:`sglbench.sim.config`) and serve.

Bad values end the process with one line on stderr and exit status 2; ignored SGLang flags are
named in one warning line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from sglbench.errors import ConfigError
from sglbench.sim.config import parse_args

log = logging.getLogger("sglbench.sim")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; return the exit status.

    0 after a signal, 1 after ``--sim-fail-after``, 2 on a user error (one line on stderr).
    """
    logging.basicConfig(level=logging.INFO, format="[sim] %(message)s", stream=sys.stderr)
    from sglbench.sim.server import serve  # after logging: the import pulls aiohttp

    try:
        args, ignored = parse_args(sys.argv[1:] if argv is None else argv)
        if ignored:
            log.warning("ignoring SGLang flags the simulator does not model: %s", " ".join(ignored))
        return serve(args)
    except ConfigError as exc:
        print(f"sglbench.sim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
