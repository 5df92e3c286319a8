"""The dashboard in a real browser: `streamlit run app.py` on a free loopback port, driven by
Playwright through Debian's /usr/bin/chromium (never a downloaded browser).

In order (the tests share one server and one browser tab): open on the sample pair and wait for
the first chart; visit every page, and every tab of Mass shift and the KL lab, with no exception
shown; start a live PPO run and see the Step metric advance, then save its policy and find it in
the sidebar's pair picker; upload a pair of zipped tiny models through the two uploaders.
Screenshots go to tests/e2e/screenshots/ (the Mass shift and Live PPO ones are copied to
docs/screenshots/ for the README) and the timings (first chart, page and tab switches, live
refresh rate) to bench/RESULTS_dashboard.md.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed")]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "tests" / "e2e" / "screenshots"
README_SHOTS = ROOT / "docs" / "screenshots"
# Only with KLVIZ_RECORD=1 does a run update tracked files (README screenshots, bench figures);
# otherwise everything goes to the gitignored tests/e2e/screenshots/.
RECORD = os.environ.get("KLVIZ_RECORD") == "1"
RESULTS = ROOT / "bench" / "RESULTS_dashboard.md" if RECORD else SHOTS / "timings.md"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
RUNNING = "[data-testid='stApp'][data-test-script-state='running']"
EXCEPTION = "[data-testid='stException']"
# Charts on each page's first view: Mass shift draws its headline and the open tab's chart, the KL
# lab its open section (Distributions); the other tabs are drawn when opened (TABS).
PAGES = {"Token inspector": 3, "Mass shift": 2, "Live PPO": 0, "KL lab": 1, "Overview": 1}
TABS = {"Mass shift": ["SFT vs policy probability", "Tokens most gained and lost", "KL by position",
                       "Sequence-level KL", "KL by band"],
        "KL lab": ["Estimators", "Gradients", "Optima", "Claims", "Distributions"]}
TIMINGS: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free loopback port; yields its URL once /_stcore/health says ok."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"streamlit exited: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no health after 60 s: {log_path.read_text()[-3000:]}"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        tail = log_path.read_text()[-4000:]
        assert "Traceback" not in tail, tail


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1600, "height": 1100})
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        yield tab
        context.close()


# Checked on every animation frame: Playwright's own waits poll at growing intervals (up to 500 ms),
# which would add up to half a second to a timing.
DRAWN = """([title, charts, inPanel, text, idle]) => {
  const app = document.querySelector("[data-testid='stApp']");
  if (idle && (!app || app.getAttribute("data-test-script-state") !== "notRunning")) return false;
  if (title && ![...document.querySelectorAll("h1")].some(h => h.textContent.includes(title))) return false;
  let scope = document;
  if (inPanel) {  // the open tab's panel
    scope = [...document.querySelectorAll("[role='tabpanel']")].find(p => p.offsetParent !== null);
    if (!scope) return false;
  }
  if (text && !scope.textContent.includes(text)) return false;
  // A chart is drawn once plotly has built its SVG layers (it makes three .main-svg per chart).
  const drawn = [...scope.querySelectorAll("[data-testid='stPlotlyChart']")].filter(c => c.querySelector(".main-svg"));
  return drawn.length >= charts;
}"""


def drawn(tab, charts: int = 0, title: str | None = None, in_panel: bool = False, text: str | None = None,
          idle: bool = True) -> None:
    """Wait until `charts` charts are drawn (in the open tab's panel if `in_panel`), with `title`
    and `text` shown and, if `idle`, the script finished."""
    tab.wait_for_function(DRAWN, arg=[title, charts, in_panel, text, idle], polling="raf")


def settle(tab, charts: int = 0, title: str | None = None) -> None:
    """Wait until the script is idle, the page's title is shown and `charts` charts are drawn."""
    drawn(tab, charts, title)


def no_exception(tab) -> None:
    assert tab.locator(EXCEPTION).count() == 0, tab.locator(EXCEPTION).first.inner_text()


def shot(tab, name: str, readme: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    if readme and RECORD:
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_SHOTS / path.name)


def nav(tab, name: str):
    return tab.locator("[data-testid='stSidebarNav'] a", has_text=name).first


def metric_value(tab, label: str) -> str:
    box = tab.locator("[data-testid='stMetric']", has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text().strip()


def set_number(tab, label: str, value: int, wait: bool = True) -> None:
    box = tab.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    if wait:
        tab.locator(IDLE).wait_for()


def choose(tab, label: str, option: str) -> None:
    """Pick `option` in the st.selectbox labelled `label`."""
    tab.get_by_role("combobox", name=label).click()
    tab.get_by_role("option", name=option).click()
    tab.locator(IDLE).wait_for()


def test_opens_on_the_sample_pair_with_a_chart(page, server):
    start = time.perf_counter()
    page.goto(server)
    drawn(page, charts=1, idle=False)  # on screen: the default view's shipped table (klviz.shipped_view)
    TIMINGS["first chart, fresh server"] = f"{time.perf_counter() - start:.2f} s"
    # The pair loads after the page is drawn (klviz.app.ui._load_pair_soon), then the sidebar shows it.
    page.locator("[data-testid='stSidebar']").get_by_text("Running on cpu").wait_for()
    settle(page, charts=1, title="Overview")
    TIMINGS["fresh server, pair loaded (sidebar complete)"] = f"{time.perf_counter() - start:.2f} s"
    no_exception(page)
    start = time.perf_counter()
    page.goto(server)  # a new session: the pair and the table come from the caches
    drawn(page, charts=1, idle=False)
    TIMINGS["first chart, opening again (cached pair and table)"] = f"{time.perf_counter() - start:.2f} s"
    page.locator("[data-testid='stSidebar']").get_by_text("Running on cpu").wait_for()  # the rest follows
    settle(page, charts=1, title="Overview")
    no_exception(page)
    shot(page, "overview")
    start = time.perf_counter()
    set_number(page, "Seed", 1, wait=False)  # new responses: sampled and scored again, imports and models warm
    page.locator(RUNNING).wait_for(timeout=10_000)  # sampling and scoring take longer than this poll
    settle(page, charts=1)
    TIMINGS["first chart, new settings (sample + score the sample pair)"] = f"{time.perf_counter() - start:.2f} s"
    set_number(page, "Seed", 0)
    settle(page, charts=1)


def test_every_page_shows_without_exception(page):
    switches = []
    for name, charts in PAGES.items():
        start = time.perf_counter()
        nav(page, name).click()
        settle(page, charts=charts, title=name)
        switches.append((name, time.perf_counter() - start))
        no_exception(page)
        shot(page, name.lower().replace(" ", "_"), readme=name == "Mass shift")
    for name, seconds in switches:
        TIMINGS[f"page switch to {name}"] = f"{seconds:.2f} s"


def test_every_tab_shows_without_exception(page):
    """Mass shift and KL lab draw one tab at a time: a click reruns the page with that tab open."""
    for name, tabs in TABS.items():
        nav(page, name).click()
        settle(page, charts=PAGES[name], title=name)
        for tab in tabs:
            start = time.perf_counter()
            page.get_by_role("tab", name=tab, exact=True).click()
            if tab == "Claims":  # a table, no chart
                drawn(page, title=name, in_panel=True, text="Claims, settled now")
            else:
                drawn(page, charts=1, title=name, in_panel=True)
            TIMINGS[f"tab switch: {name}, {tab}"] = f"{time.perf_counter() - start:.2f} s"
            no_exception(page)
            if tab == "SFT vs policy probability":
                shot(page, "mass_shift_scatter")


def test_clicking_a_token_inspects_its_position(page):
    nav(page, "Token inspector").click()
    settle(page, charts=3, title="Token inspector")
    heading = page.locator("h3", has_text="Position").first
    assert "click any token" in heading.inner_text()  # before a click: the largest KL(policy || SFT)
    bars = page.locator("[data-testid='stPlotlyChart']").first.locator("g.point")
    assert bars.count() > 1
    box = bars.nth(1).bounding_box()  # the second token of the response; plotly takes the click
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # on its drag layer
    page.locator("h3", has_text="Position 1:").first.wait_for()
    settle(page, charts=3)
    assert "click any token" not in heading.inner_text()
    no_exception(page)
    shot(page, "token_inspector_clicked")


def test_live_ppo_step_advances_and_the_saved_policy_is_picked(page):
    nav(page, "Live PPO").click()
    settle(page, title="Live PPO")
    set_number(page, "Steps", 12)
    set_number(page, "Batch size", 8)
    page.get_by_role("button", name="Start").click()
    page.locator("[data-testid='stMetric']", has_text="State").get_by_text("running").wait_for()
    deadline = time.monotonic() + 120  # the first step includes the worker's start: imports and model load
    while metric_value(page, "Step") == "0":
        assert time.monotonic() < deadline, "the Step metric did not advance"
        time.sleep(0.1)
    first_step = int(metric_value(page, "Step"))  # >= 1: it advanced from 0

    def polls() -> int:
        text = page.locator("[data-testid='stCaptionContainer']", has_text="refresh").first.inner_text()
        return int(text.rsplit("refresh", 1)[1].split()[0].replace("\\", ""))

    n0, t0 = polls(), time.perf_counter()
    while int(metric_value(page, "Step")) == first_step or time.perf_counter() - t0 < 6:
        assert time.perf_counter() - t0 < 90, "the Step metric stopped advancing"
        time.sleep(0.2)
    n1, t1 = polls(), time.perf_counter()
    assert metric_value(page, "State") == "running", "the run ended inside the measurement window"
    TIMINGS["live refresh while training"] = f"{(n1 - n0) / (t1 - t0):.2f} per second"
    shot(page, "live_ppo_running")
    page.locator("[data-testid='stMetric']", has_text="State").get_by_text("done").wait_for(timeout=120_000)
    settle(page, charts=2)
    no_exception(page)
    shot(page, "live_ppo", readme=True)  # the whole run's curves
    page.get_by_role("button", name="Save policy").click()
    page.get_by_text("It is now the sidebar's pair").wait_for()
    settle(page)
    assert page.get_by_role("combobox", name="Pair").input_value().startswith("PPO #1")
    nav(page, "Overview").click()
    settle(page, charts=1, title="Overview")
    assert "PPO #1" in page.locator("[data-testid='stMain']").inner_text()
    no_exception(page)


def zipped(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for f in sorted(folder.rglob("*")):
            z.write(f, Path(folder.name) / f.relative_to(folder))
    return out


def test_upload_a_zipped_pair(page, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from tests.helpers.tiny import save_pair

    policy, sft = save_pair(tmp_path / "tiny", kind="gpt2")
    files = {"Policy checkpoint": zipped(policy, tmp_path / "policy.zip"),
             "SFT checkpoint": zipped(sft, tmp_path / "sft.zip")}
    choose(page, "Pair", "Upload checkpoints…")
    for label, path in files.items():
        box = page.locator("[data-testid='stFileUploader']", has_text=label).first
        box.locator("input[type='file']").set_input_files(str(path))
        box.get_by_text(path.name).wait_for()  # uploaded: the uploader lists the file
        drawn(page)
    try:
        page.get_by_text("policy.zip vs sft.zip").wait_for(timeout=120_000)
    except PlaywrightTimeout:
        shot(page, "upload_failed")
        sidebar = page.locator("[data-testid='stSidebar']").inner_text().replace("\n", " | ")
        raise AssertionError(f"the uploaded pair did not load; the sidebar shows: {sidebar}") from None
    settle(page, charts=1, title="Overview")
    no_exception(page)
    assert page.locator("[data-testid='stAlertContentError']").count() == 0
    shot(page, "upload")


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    load_before = os.getloadavg()[0]
    yield
    if not TIMINGS:
        return
    load = f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run"
    rows = "\n".join(f"| {k} | {v} |" for k, v in TIMINGS.items())
    cpu = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.platform()}"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Dashboard timings\n\n"
        "Measured by tests/e2e/test_browser.py: `streamlit run app.py` on loopback, headless Debian\n"
        f"chromium via Playwright, on {cpu}; {load}. Sample pair, default sidebar settings\n"
        "(all prompts, 4 samples each, 24 new tokens, sampled from the policy).\n"
        "Goals: first chart <= 3 s, page switch <= 1 s, live refresh >= 2 per second.\n\n"
        f"| measure | value |\n|---|---|\n{rows}\n\n"
        "- *first chart, fresh server*: the first page load after `streamlit run`, until the Overview's chart\n"
        "  is on screen (its headline figures arrive with it). The default view draws from what is shipped\n"
        "  in sample_data/ (klviz/shipped_view.py: used only while the checkpoints, prompts, settings, device and\n"
        "  version that made it are unchanged), so neither torch nor pandas is imported yet, and that first\n"
        "  run sends the headline alone.\n"
        "- *pair loaded*: from the same page load until the sidebar shows the loaded pair: the sidebar and\n"
        "  the rest of the page follow 1.5 s after the headline, then torch and transformers are imported\n"
        "  and the pair loads (the page stays usable meanwhile).\n"
        "- *opening again*: a new browser session on a running server; the pair (st.cache_resource) and\n"
        "  the token table (st.cache_data) come from the caches.\n"
        "- *new settings*: the seed changed in the sidebar, so the responses are sampled and scored again.\n"
        "- *page switch*: click in the sidebar until the page is idle with all its charts drawn. Mass shift\n"
        "  draws its headline and the open tab's chart; the KL lab its open section.\n"
        "- *tab switch*: click on a tab of Mass shift or the KL lab until its chart (the Claims: its table)\n"
        "  is drawn and the page is idle; only the open tab is built and drawn (st.tabs, on_change=\"rerun\").\n"
        "- *live refresh*: live-panel refreshes per second (st.fragment polling every 0.4 s) while a PPO job\n"
        "  (batch 8) trains in the same server process.\n")
    print("\n" + RESULTS.read_text())
