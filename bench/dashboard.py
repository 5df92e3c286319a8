"""Benchmark: the dashboard's timings in a real browser, and the README's screenshots.

Runs the browser flow of tests/e2e/test_browser.py (tests/e2e/flow.py: `streamlit run app.py` on
loopback, headless Debian chromium via Playwright), then writes bench/RESULTS_dashboard.md and copies
the README screenshots to docs/screenshots/. Only this script writes those tracked files; the test
only asserts. Usage: python bench/dashboard.py
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.e2e.flow and tests.helpers, as under pytest

import torch  # noqa: E402

from tests.e2e import driver, flow  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS_dashboard.md"
README_SHOTS = ROOT / "docs" / "screenshots"
NOTES = """\
- *first chart, fresh server*: the first page load after `streamlit run`, until the Overview's chart
  is on screen (its headline figures arrive with it), drawn as a static image (klviz/views/svg.py) while
  plotly.js loads; *interactive chart*: until the plotly chart has replaced it. The default view draws
  from what is shipped in sample_data/ (klviz/shipped_view.py: used only while the checkpoints, prompts,
  settings, device and version that made it are unchanged), so neither torch nor pandas is imported yet,
  and that first run sends the headline alone (klviz/app/first_view.py).
- *pair loaded*: from the same page load until the sidebar shows the loaded pair: the sidebar and
  the rest of the page follow 1 s after the headline, then torch and transformers are imported
  and the pair loads (the page stays usable meanwhile).
- *opening again*: a new browser session on a running server; the pair (st.cache_resource) and
  the token table (st.cache_data) come from the caches.
- *new settings*: the seed changed in the sidebar, so the responses are sampled and scored again.
- *page switch*: from a click in the sidebar reaching the page (the click event's timestamp) to the first
  animation frame in which the page is idle with all its charts drawn, on the page's clock
  (tests/e2e/driver.time_click; until 2026-11-30 timed around Playwright's click(), which also counted
  its checks before clicking: bench/RESULTS.md). Mass shift draws its headline and the open tab's chart;
  the KL lab its open section.
- *tab switch*: around Playwright's click() on a tab of Mass shift or the KL lab until its chart (the
  Claims: its table) is drawn and the page is idle; only the open tab is built and drawn (st.tabs,
  on_change="rerun"). The old tab's chart meets the same test until the rerun starts, so these are not
  timed in the page.
- *live refresh*: live-panel refreshes per second (st.fragment polling every klviz.app.runs.REFRESH_S, 1 s) while a PPO job
  (batch 8) trains in the same server process.
"""


def run_flow(work: Path) -> driver.Record:
    """Every step of the browser flow, in the test's order; returns the timings and screenshots."""
    record = driver.Record(work / "screenshots")
    with driver.serve(work / "streamlit.log") as url, driver.browser(work / "chromium-profile") as tab:
        flow.open_on_the_sample_pair(tab, url, record)
        flow.every_page(tab, record)
        flow.every_tab(tab, record)
        flow.click_a_token(tab, record)
        flow.live_ppo(tab, record)
        (work / "upload").mkdir()
        flow.upload_a_zipped_pair(tab, record, work / "upload")
    return record


def results_markdown(record: driver.Record, load_before: float, load_after: float) -> str:
    load = f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the run"
    cpu = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.platform()}"
    rows = "\n".join(f"| {k} | {v} |" for k, v in record.timings.items())
    return ("# Dashboard timings\n\n"
            "Measured by bench/dashboard.py (the browser flow of tests/e2e/test_browser.py): `streamlit run\n"
            f"app.py` on loopback, headless Debian chromium via Playwright, on {cpu}; {load}.\n"
            "Sample pair, default sidebar settings (all prompts, 4 samples each, 24 new tokens, sampled\n"
            "from the policy). Goals: first chart <= 3 s, page switch <= 1 s, live refresh about 1 per second\n"
            "(klviz.app.runs.REFRESH_S; 0.4 s and >= 2 per second until the page's training rate was measured,\n"
            "bench/RESULTS.md).\n\n"
            f"| measure | value |\n|---|---|\n{rows}\n\n{NOTES}")


def main() -> None:
    if not driver.CHROMIUM.exists():
        sys.exit(f"{driver.CHROMIUM} is missing: install Debian's chromium package.")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="klviz-dashboard-") as d:
        record = run_flow(Path(d))
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        for name in flow.README_SHOTS:
            shutil.copyfile(record.shots / f"{name}.png", README_SHOTS / f"{name}.png")
    RESULTS.write_text(results_markdown(record, load_before, os.getloadavg()[0]))
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
