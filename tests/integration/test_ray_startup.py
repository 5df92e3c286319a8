"""The `--ray` driver overlaps its own work with Ray's start and shutdown (klviz.distributed_tables.ray_beside).

No cluster is started: ray_session is replaced by one that records what happened, so these run in
milliseconds; tests/integration/test_ray.py runs the real pipeline end to end.
"""

from __future__ import annotations

import contextlib
import threading

import pytest

from klviz import distributed_tables
from klviz.errors import KlvizError

WAIT_S = 30  # generous: a failure is a missed overlap, not a slow machine


@pytest.fixture
def session(monkeypatch):
    """A fake ray_session: its start waits until `prepare` has begun (so passing proves they overlap),
    and it records start, the body's end and shutdown in `events`."""
    events, preparing = [], threading.Event()

    @contextlib.contextmanager
    def fake(settings):
        assert preparing.wait(WAIT_S), "prepare did not run while Ray was starting"
        events.append("started")
        try:
            yield "ray"
        finally:
            events.append("shutdown")

    monkeypatch.setattr(distributed_tables, "ray_session", fake)
    return events, preparing


def test_prepare_runs_while_ray_starts_and_later_while_it_shuts_down(session):
    events, preparing = session
    shutting = threading.Event()
    body_done = threading.Event()

    def prepare():
        preparing.set()
        return "units"

    def write(x):
        assert body_done.wait(WAIT_S)
        events.append(f"write {x}")
        shutting.set()
        return 7

    with distributed_tables.ray_beside(None, prepare) as (ray, units, later):
        assert (ray, units) == ("ray", "units")
        rows = later(write, "table")
        body_done.set()
    assert rows() == 7
    assert events[0] == "started" and sorted(events[1:]) == ["shutdown", "write table"]


def test_an_error_in_prepare_still_shuts_ray_down_and_reaches_the_caller(session):
    events, preparing = session

    def prepare():
        preparing.set()
        raise KlvizError("in.jsonl, line 3: token id 99 is outside the vocabulary.")

    with pytest.raises(KlvizError, match="line 3"):
        with distributed_tables.ray_beside(None, prepare):
            pytest.fail("the body must not run without prepared work")
    assert events == ["started", "shutdown"]


def test_an_error_in_the_later_work_is_raised_after_shutdown(session):
    events, preparing = session

    def fail(_):
        raise KlvizError("Cannot write out.parquet.")

    with distributed_tables.ray_beside(None, preparing.set) as (_, __, later):
        rows = later(fail, None)
    assert events == ["started", "shutdown"]
    with pytest.raises(KlvizError, match="Cannot write"):
        rows()
