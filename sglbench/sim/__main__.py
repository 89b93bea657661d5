"""``python -m sglbench.sim``: the SGLang-compatible simulated server."""

from sglbench.sim.cli import main

raise SystemExit(main())
