"""In a real browser, on a server started with a checkpoint series (`klviz dashboard series.parquet`): clicking
a point of the Trajectory chart sets the sidebar's Checkpoint step to that step, and the Overview then shows
that step's figures (computed here from the parquet in float64). About 30 s, the server's start included.
"""

from __future__ import annotations

import pytest

from tests.app.test_trajectory_step import STEPS, expected_metrics, series  # noqa: F401 (the series fixture)
from tests.e2e import driver
from tests.e2e.driver import metric_value, nav, no_exception, settle
from tests.e2e.test_browser import SHOTS

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not driver.CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed")]


def test_clicking_a_trajectory_point_points_the_overview_at_that_step(series, tmp_path):  # noqa: F811
    import pandas as pd

    df = pd.read_parquet(series)
    rec = driver.Record(SHOTS)
    with driver.serve(tmp_path / "streamlit.log", (str(series),)) as url, driver.browser(tmp_path / "profile") as tab:
        tab.goto(url)
        settle(tab, charts=1, title="Overview")
        step_box = tab.get_by_role("combobox", name="Checkpoint step")
        assert step_box.input_value() == str(STEPS[-1])  # a series opens on its last step
        nav(tab, "Trajectory").click()
        settle(tab, charts=2, title="Trajectory")
        # The first trace's markers (KL(policy || SFT) per token), one per step in step order.
        points = tab.locator("[data-testid='stPlotlyChart']").first.locator(".scatterlayer .trace").first
        markers = points.locator("path.point")
        assert markers.count() == len(STEPS)
        markers.first.click(force=True)  # plotly's hover layer sits over the markers
        tab.get_by_text(f"Showing step {STEPS[0]} on the other pages").wait_for(timeout=30_000)
        settle(tab, charts=2, title="Trajectory")
        assert step_box.input_value() == str(STEPS[0])
        rec.shot(tab, "trajectory_clicked")
        nav(tab, "Overview").click()
        settle(tab, charts=1, title="Overview")
        want = expected_metrics(df[df["step"] == STEPS[0]])
        for label, value in want.items():
            assert metric_value(tab, label) == value, label
        assert f"at step {STEPS[0]}" in tab.locator("[data-testid='stMain']").inner_text()
        no_exception(tab)
        rec.shot(tab, "overview_at_clicked_step")
