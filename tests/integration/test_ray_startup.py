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


def test_score_driver_never_imports_torch_or_transformers(tmp_path):
    """`klviz score --ray` hands the rollouts to the actors (klviz.distributed.ScoreWork), which tokenize
    them: the driver, here with Ray's session and pool replaced by fakes, reaches the pool with neither
    torch nor transformers imported (their import cost ~5 s of its 2-core box's CPU, bench/RESULTS.md)."""
    pytest.importorskip("ray", reason="the optional Ray extra (requirements-ray.txt) is not installed")
    for name in ("policy", "sft"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "in.jsonl").write_text('{"prompt": "a", "response": "b"}\n' * 3)
    code = f"""
import contextlib, sys
from klviz import distributed_tables
from klviz.cli import main

@contextlib.contextmanager
def beside(settings, prepare):
    yield "ray", prepare(), lambda fn, *a: (lambda: 0)

def run_units(ray, settings, spec, units, work, **kw):
    print(sorted(m for m in ("torch", "transformers") if m in sys.modules), len(work.rollouts), len(units))
    return []

distributed_tables.ray_beside, distributed_tables.run_units = beside, run_units
sys.exit(main(["score", "--policy", "policy", "--sft", "sft", "--input", "in.jsonl", "--out", "out.parquet",
               "--batch-size", "2", "--ray"]))
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "[] 3 2"


def test_an_actors_score_result_unpickles_without_torch(tmp_path):
    """What a PairActor sends back for a ScoreBatch, (rows and their {id: text}, PairFacts), unpickles in
    a process that has not imported torch, and keeps it so; the facts give the metadata's strings."""
    import pickle
    import subprocess
    import sys

    from klviz.distributed import PairActor, PairSpec, ScoreBatch, ScoreWork
    from klviz.rollouts import read_rollouts
    from tests.helpers.tiny import make_tiny_model, make_tokenizer, save_model

    tok = make_tokenizer()
    path = save_model(make_tiny_model("llama", len(tok), seed=0), tmp_path / "sft", tok)
    (tmp_path / "in.jsonl").write_text('{"prompt": "the food", "response": " was good"}\n')
    work = ScoreWork(read_rollouts(tmp_path / "in.jsonl")[1], batch_size=1, top_k=3)
    actor = PairActor(PairSpec(policy=str(path), sft=str(path), policy_base=None, device="cpu", dtype="float32"), work)
    (tmp_path / "result.pkl").write_bytes(pickle.dumps((actor.run(ScoreBatch(0)), actor.facts)))
    code = ("import pickle, sys\n"
            "(frame, vocab), facts = pickle.loads(open('result.pkl', 'rb').read())\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules), facts.dtype, facts.device,\n"
            "      facts.sft_info.dtype, len(frame) == 2, set(vocab) >= set(frame['token_id']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "torch.float32", "cpu", "torch.float32", "True", "True"]


def test_assemble_gives_each_column_the_single_process_type():
    """Units' frames where an extra column is all None in one (object) and float or text in another: the
    assembled table's columns have the types pandas gives the whole column at once (token_frame's
    pd.DataFrame of one list per column), rows back in input order."""
    import pandas as pd

    from klviz.distributed import INPUT_KEY

    a = pd.DataFrame({INPUT_KEY: [2, 2], "reward": [None, None], "note": [None, None], "kl": [0.1, 0.2]})
    b = pd.DataFrame({INPUT_KEY: [0, 1], "reward": [0.5, 0.25], "note": ["x", None], "kl": [0.3, 0.4]})
    got = distributed_tables.assemble([a, b])
    want = pd.DataFrame({"reward": [0.5, 0.25, None, None], "note": ["x", None, None, None], "kl": [0.3, 0.4, 0.1, 0.2]})
    pd.testing.assert_frame_equal(got, want)
    assert [str(t) for t in got.dtypes] == [str(t) for t in want.dtypes] and str(got["reward"].dtype) == "float64"
