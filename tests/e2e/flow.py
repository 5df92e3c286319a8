"""The dashboard's browser flow, shared by tests/e2e/test_browser.py (which asserts) and
bench/dashboard.py (which also records the timings and the README screenshots).

The steps run in order on one server and one browser tab (tests/e2e/driver.py); each takes a
`Record`: where screenshots go and the timings measured on the way.
"""

from __future__ import annotations

import time
from pathlib import Path

from klviz.views import svg
from tests.e2e.driver import (IMAGE_SHOWN, RUNNING, Record, choose, drawn, first_paint, metric_value, nav, no_exception, set_number,
                              settle, time_click, zipped)

# Charts on each page's first view: Mass shift draws its headline and the open tab's chart, the KL
# lab its open section (Distributions); the other tabs are drawn when opened (TABS).
PAGES = {"Token inspector": 2, "Mass shift": 2, "Where RL acted": 1, "Live PPO": 0, "KL lab": 1, "Overview": 1}
TABS = {"Mass shift": ["SFT vs policy probability", "Tokens most gained and lost", "KL by position",
                       "Sequence-level KL", "KL by band"],
        "KL lab": ["Estimators", "Gradients", "Optima", "Claims", "Distributions"]}
README_SHOTS = ("mass_shift", "live_ppo")  # the screenshots the README shows (docs/screenshots/)


def open_on_the_sample_pair(tab, url: str, rec: Record) -> None:
    start = time.perf_counter()
    tab.goto(url)
    first_paint(tab)  # on screen: the default view's shipped table (klviz.shipped_view), its chart an image
    rec.time("first chart, fresh server", start)
    drawn(tab, charts=1, idle=False)  # the interactive chart in its place (klviz.app.first_view)
    rec.time("interactive chart, fresh server", start)
    # The pair loads after the page is drawn (klviz.app.first_view), then the sidebar shows it.
    tab.locator("[data-testid='stSidebar']").get_by_text("Running on cpu").wait_for()
    settle(tab, charts=1, title="Overview")
    rec.time("fresh server, pair loaded (sidebar complete)", start)
    no_exception(tab)
    start = time.perf_counter()
    tab.goto(url)  # a new session: the pair and the table come from the caches
    first_paint(tab)
    rec.time("first chart, opening again (cached pair and table)", start)
    drawn(tab, charts=1, idle=False)
    rec.time("interactive chart, opening again", start)
    tab.locator("[data-testid='stSidebar']").get_by_text("Running on cpu").wait_for()  # the rest follows
    settle(tab, charts=1, title="Overview")
    no_exception(tab)
    rec.shot(tab, "overview")
    start = time.perf_counter()
    set_number(tab, "Seed", 1, wait=False)  # new responses: sampled and scored again, imports and models warm
    tab.locator(RUNNING).wait_for(timeout=10_000)  # sampling and scoring take longer than this poll
    settle(tab, charts=1)
    rec.time("first chart, new settings (sample + score the sample pair)", start)
    set_number(tab, "Seed", 0)
    settle(tab, charts=1)


def every_page(tab, rec: Record) -> None:
    for name, charts in PAGES.items():
        took = time_click(tab, charts, name)
        nav(tab, name).click()
        settle(tab, charts=charts, title=name)
        rec.timings[f"page switch to {name}"] = f"{took():.2f} s"  # from the click reaching the page
        no_exception(tab)
        rec.shot(tab, name.lower().replace(" ", "_"))


def every_tab(tab, rec: Record) -> None:
    """Mass shift and KL lab draw one tab at a time: a click reruns the page with that tab open."""
    for name, tabs in TABS.items():
        nav(tab, name).click()
        settle(tab, charts=PAGES[name], title=name)
        for label in tabs:
            start = time.perf_counter()
            tab.get_by_role("tab", name=label, exact=True).click()
            if label == "Claims":  # a table, no chart
                drawn(tab, title=name, in_panel=True, text="Claims, settled now")
            else:
                drawn(tab, charts=1, title=name, in_panel=True)
            rec.time(f"tab switch: {name}, {label}", start)
            no_exception(tab)
            if label == "SFT vs policy probability":
                rec.shot(tab, "mass_shift_scatter")


def click_a_token(tab, rec: Record) -> None:
    """Pick the response's first token on the Token inspector's slider; the page inspects position 0."""
    nav(tab, "Token inspector").click()
    settle(tab, charts=2, title="Token inspector")
    heading = tab.locator("h3", has_text="Position").first
    assert "the largest KL(policy || SFT)" in heading.inner_text()  # before a pick
    # the whole response, as coloured text (its HTML can land a moment after the script is idle: wait)
    tab.locator(".klviz-tokens span").nth(1).wait_for(timeout=10_000)
    # the page's select_slider (the sidebar's Temperature slider comes first in the document: not that one)
    slider = tab.locator("[data-testid='stMain']").get_by_role("slider").first
    slider.press("Home")  # its thumb: the first option
    tab.locator("h3", has_text="Position 0:").first.wait_for()
    settle(tab, charts=2)
    no_exception(tab)
    temperature = tab.locator("[data-testid='stSidebar'] [data-testid='stSlider']", has_text="Temperature")
    now = temperature.locator("[data-testid='stSliderThumbValue']").inner_text()
    assert float(now) == 1.0, f"picking a token changed the sampling settings: temperature {now}"
    rec.shot(tab, "token_inspector_clicked")


def live_ppo(tab, rec: Record, batch_size: int = 8) -> None:
    """Start a run, see the Step metric advance (and count live refreshes), save its policy and find it
    in the sidebar's pair picker and on the Overview. bench/dashboard.py trains batches of 8 (its timings
    and screenshots); the test trains batches of 4, half the work, as every check here holds for both."""
    nav(tab, "Live PPO").click()
    settle(tab, title="Live PPO")
    set_number(tab, "Steps", 40)  # a worker on a quiet box trains 12 steps (batch 8) inside the 6 s window
    set_number(tab, "Batch size", batch_size)
    tab.get_by_role("button", name="Start").click()
    tab.locator("[data-testid='stMetric']", has_text="State").get_by_text("running").wait_for()
    deadline = time.monotonic() + 120  # the first step includes the worker's start: imports and model load
    while metric_value(tab, "Step") == "0":
        assert time.monotonic() < deadline, "the Step metric did not advance"
        time.sleep(0.1)
    first_step = int(metric_value(tab, "Step"))  # >= 1: it advanced from 0

    def polls() -> int:
        text = tab.locator("[data-testid='stCaptionContainer']", has_text="refresh").first.inner_text()
        return int(text.rsplit("refresh", 1)[1].split()[0].replace("\\", ""))

    n0, t0 = polls(), time.perf_counter()
    while int(metric_value(tab, "Step")) == first_step or time.perf_counter() - t0 < 6:
        assert time.perf_counter() - t0 < 90, "the Step metric stopped advancing"
        time.sleep(0.2)
    n1, t1 = polls(), time.perf_counter()
    assert metric_value(tab, "State") == "running", "the run ended inside the measurement window"
    rec.timings["live refresh while training"] = f"{(n1 - n0) / (t1 - t0):.2f} per second"
    rec.shot(tab, "live_ppo_running")
    # while it trains the curves are an image (klviz.views.svg), drawn by the browser; no plotly chart redraws
    tab.wait_for_function(IMAGE_SHOWN, arg=svg.CURVES_ALT, timeout=10_000)
    assert not tab.locator("[data-testid='stPlotlyChart']").count(), "a plotly chart redraws while the run trains"
    tab.locator("[data-testid='stMetric']", has_text="State").get_by_text("done").wait_for(timeout=120_000)
    settle(tab, charts=2)
    no_exception(tab)
    start = tab.get_by_role("button", name="Start")
    deadline = time.monotonic() + 10  # the panel reruns the page when its run ends: Start is offered again
    while not start.is_enabled():
        assert time.monotonic() < deadline, "Start stayed disabled after the run was done"
        time.sleep(0.1)
    assert not tab.get_by_role("button", name="Stop").is_enabled(), "Stop stayed enabled after the run was done"
    rec.shot(tab, "live_ppo")  # the whole run's curves
    tab.get_by_role("button", name="Save policy").click()
    tab.get_by_text("It is now the sidebar's pair").wait_for()
    settle(tab)
    assert tab.get_by_role("combobox", name="Pair").input_value().startswith("PPO #1")
    nav(tab, "Overview").click()
    settle(tab, charts=1, title="Overview")
    assert "PPO #1" in tab.locator("[data-testid='stMain']").inner_text()
    no_exception(tab)


def upload_a_zipped_pair(tab, rec: Record, tmp: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from tests.helpers.tiny import save_pair

    policy, sft = save_pair(tmp / "tiny", kind="gpt2")
    files = {"Policy checkpoint": zipped(policy, tmp / "policy.zip"),
             "SFT checkpoint": zipped(sft, tmp / "sft.zip")}
    nav(tab, "Overview").click()  # where the loaded pair's label shows, whatever page the last step left open
    settle(tab, title="Overview")
    choose(tab, "Pair", "Upload checkpoints…")
    for label, path in files.items():
        box = tab.locator("[data-testid='stFileUploader']", has_text=label).first
        for attempt in range(3):
            # a file set while the last upload's rerun redraws the uploader can be dropped with the old element
            box.locator("input[type='file']").set_input_files(str(path))
            try:
                box.get_by_text(path.name).wait_for(timeout=30_000)  # uploaded: the uploader lists the file
                break
            except PlaywrightTimeout:
                assert attempt < 2, f"the {label} uploader never listed {path.name}"
                drawn(tab)
        drawn(tab)
    try:
        # the loaded pair's name; while it loads, "Loading policy.zip vs sft.zip…" shows twice (page and sidebar)
        tab.get_by_text("policy.zip vs sft.zip").filter(has_not_text="Loading").first.wait_for(timeout=120_000)
    except PlaywrightTimeout:
        rec.shot(tab, "upload_failed")
        sidebar = tab.locator("[data-testid='stSidebar']").inner_text().replace("\n", " | ")
        raise AssertionError(f"the uploaded pair did not load; the sidebar shows: {sidebar}") from None
    settle(tab, charts=1, title="Overview")
    no_exception(tab)
    assert tab.locator("[data-testid='stAlertContentError']").count() == 0
    rec.shot(tab, "upload")
