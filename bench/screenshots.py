"""Benchmark and acceptance aid for issue 15: every page of the dashboard on the shipped sample pair, at
1280 and 1600 px wide, as full-page screenshots `<page>-<tab>-<width>.png`; the page-switch times
("drawn and idle", as tests/e2e/driver.py measures them); and the chart defects of bench/chart_checks.py
(overlapping titles, cut-off text, ranked bars without a label, SI suffixes), listed per page and width.

    python bench/screenshots.py [--out docs/screenshots/widths] [--widths 1280 1600] [--ppo-steps 3]

Prints a markdown table for bench/RESULTS.md (the switch times, with `uptime` before and after) and the
defect list (empty is the goal). Reuses the e2e driver and flow (tests/e2e/); the CI never runs this.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.e2e and bench, as under pytest

from bench.chart_checks import defects  # noqa: E402
from tests.e2e import driver, flow  # noqa: E402

HEIGHT = 900
ORDER = ["Token inspector", "Mass shift", "Trajectory", "Where RL acted", "KL lab", "Live PPO", "Overview"]
ACTED_TABS = ["Token shift by position", "Most shifted tokens", "Forking positions' share of KL",
              "Entropy change per token"]  # pages/where_rl_acted.py's figures
TABS = {**flow.TABS, "Where RL acted": ACTED_TABS}
CHARTS = {**flow.PAGES, "Trajectory": 0}  # no series table open: the page says how to open one


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


class Shots(driver.Record):
    """A Record whose screenshots are `<page>-<tab>-<width>.png`, taken the height of the whole page
    (Streamlit scrolls inside its main container, so a plain full-page shot stops at the viewport)."""

    def __init__(self, shots: Path, width: int) -> None:
        super().__init__(shots)
        self.width = width
        self.found: dict[str, list[str]] = {}

    def shot(self, tab, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        tall = tab.evaluate("() => { const m = document.querySelector(\"[data-testid='stMain']\");"
                            " return m ? m.scrollHeight : 0; }")
        if tall > HEIGHT:
            tab.set_viewport_size({"width": self.width, "height": tall})
            tab.wait_for_timeout(300)  # plotly relayouts on resize
        file = f"{name}-{self.width}.png"
        tab.screenshot(path=str(self.shots / file), full_page=True)
        self.found[file] = defects(tab)
        tab.set_viewport_size({"width": self.width, "height": HEIGHT})


def go_to(tab, name: str) -> float:
    """Click `name` in the sidebar until the page is drawn and idle; the seconds from the (first) click reaching
    the page to the frame it was drawn in (driver.time_click). A click that lands while the script reruns (a
    page polling a worker, the inspector's slider) was seen dropped: then click once more."""
    took = driver.time_click(tab, CHARTS[name], name)
    driver.nav(tab, name).click()
    try:
        tab.locator("h1", has_text=name).first.wait_for(timeout=15_000)
    except Exception:  # noqa: BLE001 -- playwright's TimeoutError: the click was dropped
        driver.nav(tab, name).click()
    driver.settle(tab, charts=CHARTS[name], title=name)
    return took()


def visit(tab, rec: Shots, name: str) -> None:
    rec.timings[name] = f"{go_to(tab, name):.2f} s"  # from the click reaching the page
    driver.no_exception(tab)
    if name not in TABS:
        rec.shot(tab, f"{slug(name)}-page")
        return
    for label in TABS[name]:
        tab.get_by_role("tab", name=label, exact=True).click()
        if label == "Claims":
            driver.drawn(tab, title=name, in_panel=True, text="Claims, settled now")
        else:
            driver.drawn(tab, charts=1, title=name, in_panel=True)
        driver.no_exception(tab)
        rec.shot(tab, f"{slug(name)}-{slug(label)}")


def live_ppo_run(tab, rec: Shots, steps: int) -> None:
    """A short run, so that the page's curves draw (its own session keeps them for the next width)."""
    driver.set_number(tab, "Steps", steps)
    driver.set_number(tab, "Batch size", 8)
    tab.get_by_role("button", name="Start").click()
    tab.locator("[data-testid='stMetric']", has_text="State").get_by_text("done").wait_for(timeout=300_000)
    driver.settle(tab, charts=2)
    driver.no_exception(tab)
    rec.shot(tab, "live_ppo-curves")


def one_width(tab, url: str, out: Path, width: int, ppo_steps: int) -> Shots:
    rec = Shots(out, width)
    tab.set_viewport_size({"width": width, "height": HEIGHT})
    for name in ORDER:
        try:
            visit(tab, rec, name)
            if name == "Token inspector":
                flow.click_a_token(tab, rec)  # saves token_inspector_clicked-<width>.png
            if name == "Live PPO" and ppo_steps:
                live_ppo_run(tab, rec, ppo_steps)
        except Exception as e:  # noqa: BLE001 -- one page's failure is reported, the others still run
            rec.timings.setdefault(name, "failed")
            rec.found[f"{slug(name)}-failed-{width}.png"] = [f"{type(e).__name__}: {str(e).splitlines()[0]}"]
            tab.screenshot(path=str(out / f"{slug(name)}-failed-{width}.png"), full_page=True)
    return rec


def markdown(records: list[Shots], before: str, after: str) -> str:
    head = "| page switch (drawn and idle) | " + " | ".join(f"{r.width} px" for r in records) + " | goal |"
    rows = [head, "|---|" + "---|" * len(records) + "---|"]
    for name in ORDER:
        rows.append(f"| {name} | " + " | ".join(r.timings.get(name, "-") for r in records) + " | <= 1 s |")
    return (f"Shipped sample pair, default sidebar settings, headless Debian chromium at {HEIGHT} px high "
            f"(bench/screenshots.py), {os.cpu_count()} CPU cores.\n\n" + "\n".join(rows)
            + f"\n\nLoad before: `{before}`  \nLoad after: `{after}`\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="folder for the screenshots (default: a new temporary folder)")
    ap.add_argument("--widths", type=int, nargs="+", default=[1280, 1600])
    ap.add_argument("--ppo-steps", type=int, default=3, help="Live PPO steps run on the first width (0: none)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds any one wait may take")
    args = ap.parse_args()
    if not driver.CHROMIUM.exists():
        sys.exit(f"{driver.CHROMIUM} is missing: install Debian's chromium package.")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="klviz-shots-"))
    work = Path(tempfile.mkdtemp(prefix="klviz-shots-work-"))
    before = uptime()
    records = []
    with driver.serve(work / "streamlit.log") as url, driver.browser(work / "profile", args.widths[0], HEIGHT) as tab:
        tab.set_default_timeout(args.timeout * 1000)  # a shared, loaded box: the table may take minutes
        tab.goto(url)
        tab.locator("[data-testid='stSidebar']").get_by_text("Running on cpu").wait_for()
        driver.settle(tab, charts=1, title="Overview")
        for i, width in enumerate(args.widths):
            records.append(one_width(tab, url, out, width, args.ppo_steps if i == 0 else 0))
    after = uptime()
    print(markdown(records, before, after))
    found = {f: d for r in records for f, d in r.found.items() if d}
    print("## Chart defects" + ("" if found else "\n\nnone"))
    for file, items in found.items():
        print(f"\n{file}")
        for item in items:
            print(f"- {item}")
    print(f"\nScreenshots: {out}")


if __name__ == "__main__":
    main()
