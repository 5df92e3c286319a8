"""Benchmark: the dashboard's first chart from a fresh server, and its page switches, for several checkouts
back to back.

A single run of bench/dashboard.py moves by ~0.3-0.5 s from run to run on a shared VM, too much to tell
two versions apart from runs made an hour apart. This runs only the first measure of that flow, for
each checkout given (e.g. a worktree of the code before a change, and this one), alternating over
--rounds: `streamlit run app.py` in that checkout on a free loopback port, a new headless chromium
profile, then the time from page.goto to the first chart on screen (tests/e2e/driver.first_paint: the static
first-paint image, or for older code a drawn plotly chart) and to the first drawn plotly chart (the interactive
one; tests/e2e/driver.DRAWN), the same checks for every checkout. With --pages, then (once the sidebar shows
the loaded pair) each page of the flow's page tour that every checkout has, in the flow's order: click in the
sidebar until the page is idle with its title and as many charts as that checkout's own e2e flow waits for (its
PAGES). Prints the median and every round.

Usage: python bench/first_chart.py [--rounds 3] [--pages] CHECKOUT [CHECKOUT ...]
"""

from __future__ import annotations

import argparse
import ast
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e import driver  # noqa: E402


def tour(checkout: Path) -> dict[str, int]:
    """The checkout's e2e page tour: page name -> charts its flow waits for (PAGES in tests/e2e/flow.py,
    or in tests/e2e/test_browser.py before the flow had its own module)."""
    for name in ("flow.py", "test_browser.py"):
        path = checkout / "tests" / "e2e" / name
        if path.exists():
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PAGES" for t in node.targets):
                    return ast.literal_eval(node.value)
    raise SystemExit(f"{checkout}: no PAGES in tests/e2e")


def measure(checkout: Path, pages: dict[str, int]) -> dict[str, float]:
    """{"first chart": s, "page switch to NAME": s, ...} in one fresh server and browser."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="klviz-first-chart-") as tmp:
        original = driver.ROOT
        driver.ROOT = checkout  # serve() runs `streamlit run app.py` there
        try:
            with driver.serve(Path(tmp) / "server.log") as url, driver.browser(Path(tmp) / "profile") as tab:
                start = time.perf_counter()
                tab.goto(url)
                driver.first_paint(tab)  # the static first-paint image (klviz.views.svg) or, older code, a plotly chart
                out["first chart, fresh server"] = time.perf_counter() - start
                driver.drawn(tab, charts=1, idle=False)
                out["interactive chart, fresh server"] = time.perf_counter() - start
                if pages:
                    tab.locator("[data-testid='stSidebar']").get_by_text("Running on cpu").wait_for()
                    driver.settle(tab, charts=1, title="Overview")
                for name, charts in pages.items():
                    start = time.perf_counter()
                    driver.nav(tab, name).click()
                    driver.settle(tab, charts=charts, title=name)
                    out[f"page switch to {name}"] = time.perf_counter() - start
        finally:
            driver.ROOT = original
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pages", action="store_true", help="also time the page switches every checkout has")
    args = ap.parse_args()
    checkouts = [c.resolve() for c in args.checkouts]
    tours = {c: tour(c) for c in checkouts}
    common = [name for name in tours[checkouts[-1]] if all(name in t for t in tours.values())] if args.pages else []
    times: dict[Path, dict[str, list[float]]] = {c: {} for c in checkouts}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for c in checkouts:
            for measure_name, t in measure(c, {n: tours[c][n] for n in common}).items():
                times[c].setdefault(measure_name, []).append(t)
            load.append(os.getloadavg()[0])
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, load {min(load):.2f}-{max(load):.2f}; {args.rounds} alternating rounds")
    print("| measure | " + " | ".join(str(c) for c in checkouts) + " |")
    print("|---|" + "---|" * len(checkouts))
    for measure_name in times[checkouts[0]]:
        cells = [f"{statistics.median(times[c][measure_name]):.2f} s "
                 f"({', '.join(f'{t:.2f}' for t in times[c][measure_name])})" for c in checkouts]
        print(f"| {measure_name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
