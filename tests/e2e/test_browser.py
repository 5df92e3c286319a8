"""The dashboard in a real browser: `streamlit run app.py` on a free loopback port, driven by Playwright
through Debian's /usr/bin/chromium (never a downloaded browser). The steps are tests/e2e/flow.py.

In order (the tests share one server and one browser tab): open on the sample pair and wait for
the first chart; visit every page, and every tab of Mass shift and the KL lab, with no exception
shown; click a token; start a live PPO run and see the Step metric advance, then save its policy and
find it in the sidebar's pair picker; upload a pair of zipped tiny models through the two uploaders;
and, over all of it, every request the page made went to the loopback server (klviz works offline).
Screenshots go to the git-ignored tests/e2e/screenshots/; nothing tracked is written (the README
screenshots and bench/RESULTS_dashboard.md come from bench/dashboard.py).
"""

from __future__ import annotations

import pytest

from tests.e2e import driver, flow

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not driver.CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed")]

SHOTS = driver.ROOT / "tests" / "e2e" / "screenshots"


@pytest.fixture(scope="module")
def record() -> driver.Record:
    return driver.Record(SHOTS)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with driver.serve(tmp_path_factory.mktemp("server") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    with driver.browser(tmp_path_factory.mktemp("chromium-profile")) as tab:
        yield tab


def test_opens_on_the_sample_pair_with_a_chart(page, server, record):
    flow.open_on_the_sample_pair(page, server, record)


def test_every_page_shows_without_exception(page, record):
    flow.every_page(page, record)


def test_every_tab_shows_without_exception(page, record):
    flow.every_tab(page, record)


def test_clicking_a_token_inspects_its_position(page, record):
    flow.click_a_token(page, record)


def test_live_ppo_step_advances_and_the_saved_policy_is_picked(page, record):
    flow.live_ppo(page, record, batch_size=4)  # 40 steps of 4 outlast the 6 s window on a quiet box too


def test_upload_a_zipped_pair(page, record, tmp_path):
    flow.upload_a_zipped_pair(page, record, tmp_path)


def test_nothing_the_page_fetched_left_loopback(page):
    """klviz works offline: over the whole flow above, every request went to the loopback server."""
    assert page.requested, "no request was recorded"
    assert driver.off_loopback(page.requested) == []
