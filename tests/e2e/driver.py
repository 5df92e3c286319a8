"""Driving the dashboard in a browser: `streamlit run app.py` on a free loopback port, Playwright through
Debian's /usr/bin/chromium (never a downloaded browser), waits, widgets, and a `Record` of screenshots
and timings. The steps themselves are in tests/e2e/flow.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from klviz.views import svg

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
RUNNING = "[data-testid='stApp'][data-test-script-state='running']"
EXCEPTION = "[data-testid='stException']"


@dataclass
class Record:
    """Where a run's screenshots go, and the timings it measured (measure -> "1.23 s")."""

    shots: Path
    """The folder screenshots are saved in."""
    timings: dict[str, str] = field(default_factory=dict)
    """Each measure's value, in the order measured."""

    def shot(self, tab, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def time(self, measure: str, start: float) -> None:
        self.timings[measure] = f"{time.perf_counter() - start:.2f} s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(log_path: Path, args: tuple[str, ...] = (), timeout: float = 60) -> Iterator[str]:
    """`streamlit run app.py [-- ARGS]` on a free loopback port; with ARGS (as `klviz dashboard` passes them:
    tables, --policy/--sft, --data-root) through klviz.app.serve, as `klviz dashboard` runs it (its warm-up
    thread included). Yields its URL once /_stcore/health says ok. On exit the server stops, and its log must
    hold no traceback."""
    port = free_port()
    launcher = ["-m", "klviz.app.serve"] if args else ["-m", "streamlit", "run"]
    cmd = [sys.executable, *launcher, "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false", *(["--", *args] if args else [])]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"streamlit exited: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no health after {timeout:.0f} s: {log_path.read_text()[-3000:]}"
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


@contextlib.contextmanager
def browser(profile: Path, width: int = 1600, height: int = 1100):
    """A Playwright tab in Debian's headless chromium, its viewport width x height."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": width, "height": height})
        requested: list[str] = []  # every URL the page asked for (klviz works offline: loopback only)
        context.on("request", lambda request: requested.append(request.url))
        tab = context.new_page()
        tab.requested = requested
        tab.set_default_timeout(60_000)
        yield tab
        context.close()


LOCAL_URL = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost)(:\d+)?/|^(data|blob|about):")


def off_loopback(urls: list[str]) -> list[str]:
    """The URLs that would leave the machine: anything but the loopback server and in-page data."""
    return sorted({u for u in urls if not LOCAL_URL.match(u)})


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
  // A chart is drawn once plotly has built its SVG layers (it makes three .main-svg per chart). The first
  // view's empty 10-pixel chart that preloads plotly.js (klviz.app.first_view) is no chart.
  const drawn = [...scope.querySelectorAll("[data-testid='stPlotlyChart']")].filter(
    c => c.querySelector(".main-svg") && !c.closest(".st-key-plotly-preload"));
  return drawn.length >= charts;
}"""


# An image chart (klviz.views.svg) on screen, by its alt text: decoded and laid out.
IMAGE_SHOWN = """(alt) => [...document.querySelectorAll("[data-testid='stImage'] img")].some(
  i => i.alt === alt && i.complete && i.naturalWidth > 0 && i.width > 0)"""
# The Overview's static first-paint chart.
STATIC_SHOWN = "() => (%s)(%s)" % (IMAGE_SHOWN, json.dumps(svg.ALT))
# The Overview's first paint on a new session (klviz.app.first_view): its chart as that static image, or any
# drawn plotly chart.
FIRST_PAINT = """([title]) => {
  if (title && ![...document.querySelectorAll("h1")].some(h => h.textContent.includes(title))) return false;
  return (%s)() || (%s)([title, 1, false, null, false]);
}""" % (STATIC_SHOWN, DRAWN)


def first_paint(tab, title: str | None = None) -> None:
    """Wait until the page shows its first chart: the static first-paint image or a drawn plotly chart."""
    tab.wait_for_function(FIRST_PAINT, arg=[title], polling="raf")


# Run in every document of a context before its own scripts (context.add_init_script): notes, on the page's
# clock (milliseconds from the navigation's start, performance.timeOrigin), the first animation frame in which
# FIRST_PAINT holds. What a person waits for, without Playwright's polling round trips, which a renderer
# starved by other work answers late.
WATCH_FIRST_PAINT = """(() => {
  const shown = %s;
  window.__klvizFirstPaintAt = null;
  const frame = () => {
    if (document.body && shown([null])) { window.__klvizFirstPaintAt = performance.now(); return; }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
})();""" % FIRST_PAINT


def first_paint_at(tab) -> float:
    """Seconds from the navigation's start to the frame of the first paint, on the page's clock; the tab's
    context must have WATCH_FIRST_PAINT as an init script."""
    tab.wait_for_function("() => window.__klvizFirstPaintAt !== null", polling="raf")
    return tab.evaluate("() => window.__klvizFirstPaintAt / 1000")


def drawn(tab, charts: int = 0, title: str | None = None, in_panel: bool = False, text: str | None = None,
          idle: bool = True) -> None:
    """Wait until `charts` charts are drawn (in the open tab's panel if `in_panel`), with `title`
    and `text` shown and, if `idle`, the script finished."""
    tab.wait_for_function(DRAWN, arg=[title, charts, in_panel, text, idle], polling="raf")


# Before a click: note when the click reaches the page (the event's timestamp) and then, checked every frame,
# when DRAWN first holds after it; both on the page's clock (klviz.app's pages switch without a reload).
WATCH_CLICK = """(args) => {
  const drawn = %s;
  window.__klvizClickAt = null; window.__klvizDrawnAt = null;
  document.addEventListener("click", e => { window.__klvizClickAt = e.timeStamp; }, {capture: true, once: true});
  const frame = () => {
    if (window.__klvizClickAt !== null && drawn(args)) { window.__klvizDrawnAt = performance.now(); return; }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}""" % DRAWN


def time_click(tab, charts: int = 0, title: str | None = None, in_panel: bool = False, text: str | None = None):
    """Call before clicking; returns `took()`, to call once the page is drawn (`drawn` with the same arguments,
    idle): the seconds from the click reaching the page to the frame in which it was drawn. This is what a
    person waits. A timer around Playwright's `click()` also counts Playwright's own checks before it clicks
    (the element visible and still over two frames: 0.3-1.3 s in a renderer starved by two training runs on
    2 cores, bench/RESULTS.md) and its round trips."""
    tab.evaluate(WATCH_CLICK, [title, charts, in_panel, text, True])

    def took() -> float:
        tab.wait_for_function("() => window.__klvizDrawnAt !== null", polling="raf")
        return tab.evaluate("() => (window.__klvizDrawnAt - window.__klvizClickAt) / 1000")

    return took


def settle(tab, charts: int = 0, title: str | None = None) -> None:
    """Wait until the script is idle, the page's title is shown and `charts` charts are drawn."""
    drawn(tab, charts, title)


def no_exception(tab) -> None:
    assert tab.locator(EXCEPTION).count() == 0, tab.locator(EXCEPTION).first.inner_text()


def nav(tab, name: str):
    return tab.locator("[data-testid='stSidebarNav'] a", has_text=name).first


def metric_value(tab, label: str) -> str:
    box = tab.locator("[data-testid='stMetric']", has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text().strip()


def set_number(tab, label: str, value: int, wait: bool = True) -> None:
    box = tab.get_by_label(label, exact=True)
    deadline = time.monotonic() + 30  # while a rerun draws, the old widget can still stand beside the new one
    while box.count() != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    box.fill(str(value))
    box.press("Enter")
    if wait:
        tab.locator(IDLE).wait_for()


def choose(tab, label: str, option: str) -> None:
    """Pick `option` in the st.selectbox labelled `label`."""
    tab.get_by_role("combobox", name=label).click()
    tab.get_by_role("option", name=option).click()
    tab.locator(IDLE).wait_for()


def zipped(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for f in sorted(folder.rglob("*")):
            z.write(f, Path(folder.name) / f.relative_to(folder))
    return out
