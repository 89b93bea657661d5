"""report.html renders in headless Chromium (Debian's `chromium`): no console errors, plots shown.

Chromium runs with no network features and a throwaway profile; it only opens file:// pages.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sglbench.report import build_report
from tests.conftest import REFERENCE, needs_reference

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed: apt-get install -y chromium (.ci/run does)",
    ),
    needs_reference,
]
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0")  # fmt: skip
# Appended to a copy of the page: reports in the title how many images decoded, and the height.
PROBE = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = `IMAGES ${ok}/${imgs.length} HEIGHT ${document.body.scrollHeight}`;
});</script>"""
AGG_BLUE, PD_MAGENTA, BANNER_YELLOW = (0x2E, 0x86, 0xAB), (0xA2, 0x3B, 0x72), (0xFF, 0xF3, 0xCD)


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def console_messages(stderr: str) -> list[str]:
    """Lines Chromium logs for the page's console (errors, uncaught exceptions)."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def probe(page: Path, tmp_path: Path) -> tuple[int, int, int, list[str]]:
    """Open a copy of ``page`` with PROBE: (images decoded, images, page height, console lines)."""
    copy = tmp_path / f"probe-{page.name}"
    copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = chromium(copy, tmp_path, "--dump-dom", "--virtual-time-budget=5000")
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r"<title>IMAGES (\d+)/(\d+) HEIGHT (\d+)</title>", done.stdout)
    assert match, done.stdout[:500]
    ok, total, height = (int(g) for g in match.groups())
    return ok, total, height, console_messages(done.stderr)


def screenshot(page: Path, tmp_path: Path, height: int) -> np.ndarray[Any, Any]:
    shot = tmp_path / f"{page.stem}.png"
    done = chromium(page, tmp_path, f"--screenshot={shot}", f"--window-size=1280,{height}")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB"))


def pixels_near(image: np.ndarray[Any, Any], color: tuple[int, int, int]) -> int:
    distance = np.abs(image.astype(np.int16) - np.array(color, dtype=np.int16)).sum(axis=2)
    return int((distance < 30).sum())


def test_console_errors_would_be_seen(tmp_path: Path) -> None:
    # Guards the next tests: a page with a script error does show up in what we grep.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert any("Uncaught ReferenceError" in m for m in console_messages(
        chromium(bad, tmp_path, "--dump-dom").stderr))  # fmt: skip


def test_reference_report_renders_every_plot(tmp_path: Path) -> None:
    paths = build_report([REFERENCE], tmp_path / "report", slo_ttft_ms=200.0, slo_itl_ms=50.0)
    ok, total, height, messages = probe(paths.html, tmp_path)
    assert (ok, total) == (7, 7), "every embedded PNG decodes"
    assert messages == []
    image = screenshot(paths.html, tmp_path, min(height + 50, 16000))
    assert image.shape[1] == 1280 and image.shape[0] > 5000
    # The plots' lines are drawn in the series colours; nothing else on the page uses them.
    assert pixels_near(image, AGG_BLUE) > 2000 and pixels_near(image, PD_MAGENTA) > 2000
    assert pixels_near(image[:400], BANNER_YELLOW) == 0  # real results: no simulated banner


def test_simulated_report_shows_the_banner_first(tmp_path: Path) -> None:
    run = tmp_path / "results" / "sim-run"
    run.mkdir(parents=True)
    for mode, source in (("agg", "agg"), ("pd", "pd_intra")):
        rows = [json.loads((REFERENCE / f"{source}_n100_in512_out128_c{c}.jsonl").read_text())
                for c in (8, 32)]  # fmt: skip
        (run / f"{mode}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "metadata.json").write_text(json.dumps({"run_id": "sim-run", "simulated": True}))
    paths = build_report([run], tmp_path / "report", None, None)
    ok, total, _, messages = probe(paths.html, tmp_path)
    assert (ok, total, messages) == (6, 6, [])  # no goodput figure without SLOs
    top = screenshot(paths.html, tmp_path, 400)
    assert pixels_near(top, BANNER_YELLOW) > 20_000, "the yellow SIMULATED banner is on screen"
