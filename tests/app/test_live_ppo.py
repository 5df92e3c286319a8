"""AppTest over the Live PPO page with real runs (a worker process each): a run advances and its saved
policy becomes the pair; a training run's charts are images unless asked otherwise; Stop ends a run and a
second run is overlaid; a closed tab stops its runs; the server-wide job limit is a clear message. Split
from tests/app/test_pages.py (whose helpers and autouse fixture it uses) so that pytest-xdist's two
workers can share the page tests.
"""

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from klviz.app import runs
from tests.app import test_pages
from tests.app.test_pages import ROOT, K, charts, clean, click, current, metric, ppo_page, shown

_fresh = test_pages._fresh  # its autouse fixture: fresh caches and upload folders per test


def wait_for_state(at: AppTest, states: tuple, timeout: float = 240) -> AppTest:  # a worker starts first
    """Rerun the page until its State metric is one of `states` (all of them a run's end: done, stopped).
    It first waits on the session's job itself: rerunning the whole page every half second while the
    worker imports torch and trains took a good part of a core from that worker (at nice 2) on two cores."""
    deadline = time.monotonic() + timeout
    job = runs.job_registry().get(at.session_state[K.SESSION])
    if job is not None:
        job.join(timeout)
    while metric(at, "State") not in states:
        assert time.monotonic() < deadline, f"still {metric(at, 'State')} at step {metric(at, 'Step')}"
        time.sleep(0.5)
        clean(at.run())
    return at


def test_live_ppo_run_advances_and_its_saved_policy_becomes_the_pair():
    at = clean(click(ppo_page(steps=3), "Start"))
    assert metric(at, "State") in ("running", "done")
    wait_for_state(at, ("done",))
    assert metric(at, "Step") == "3"
    assert len(charts(at)) == 2  # the curves and the mass moved of the current policy
    clean(click(at, "Save policy"))
    assert at.success and shown(at.success[0].value).startswith("Saved ")
    label = current(at).source.label
    assert label.startswith("PPO #1 k1 in reward") and label in at.selectbox(key=K.PAIR).options
    assert Path(current(at).source.policy, "config.json").exists()
    assert current(at).source.sft == "sample_data/sft"
    clean(at.switch_page("pages/overview.py").run())  # "train, then inspect": the saved policy's overview
    assert current(at).source.label == label and len(charts(at)) == 1


def test_stop_ends_a_run_and_a_second_run_is_overlaid():
    at = clean(click(ppo_page(steps=2000), "Start"))
    # While it trains, the curves are an image (klviz.views.svg: a plotly redraw every 2 s cost the 2-core box
    # more than the run could spare); the toggle brings the interactive chart back.
    assert metric(at, "State") == "running" and not charts(at)
    images = at.get("image")
    assert len(images) == 1 and images[0].value[0].startswith("data:image/svg+xml;base64,")
    interactive = next(t for t in at.toggle if t.label == "Interactive charts while training")
    clean(interactive.set_value(True).run())
    assert metric(at, "State") == "running" and not at.get("image") and [c.key for c in charts(at)] == ["ppo.curves"]
    clean(next(t for t in at.toggle if t.label == "Interactive charts while training").set_value(False).run())
    clean(click(at, "Stop"))
    wait_for_state(at, ("stopped",))
    clean(click(at, "Start"))
    clean(click(at, "Stop"))
    wait_for_state(at, ("stopped",))
    curves = charts(at)[0].proto.spec
    assert "#1 k1 in reward" in curves and "#2 k1 in reward" in curves


def test_closing_the_tab_stops_its_runs():
    from streamlit.runtime.caching import clear_session_resource_cache

    at = clean(click(ppo_page(steps=2000), "Start"))
    job = runs.job_registry().get(at.session_state[K.SESSION])
    assert job is not None and job.running
    # What AppSession.clear_session_caches does when a browser tab disconnects ("test session id"
    # is AppTest's session): the session's run book is released and its runs stop.
    clear_session_resource_cache("test session id")
    assert job.join(240) and job.snapshot().state == "stopped"  # stops once its worker has loaded


def test_the_server_wide_job_limit_is_a_clear_message(monkeypatch):
    from klviz.ppo.config import PPOConfig

    monkeypatch.setattr(runs, "MAX_JOBS", 1)
    from klviz.ppo.jobs import ModelSpec

    cfg = PPOConfig(steps=10_000, batch_size=2, minibatches=1, ppo_epochs=1, max_new_tokens=4, device="cpu")
    elsewhere = runs.job_registry().start("another-browser-session", ModelSpec(str(ROOT / "sample_data" / "sft")),
                                          ["the food was"], cfg)  # the server's one slot is taken
    try:
        at = click(ppo_page(steps=3), "Start")
        assert not at.exception
        assert any("already running on this server" in shown(e.value) for e in at.error)
        assert metric(at, "Step") == "0" and elsewhere.running
    finally:
        elsewhere.stop()
        assert elsewhere.join(240)
