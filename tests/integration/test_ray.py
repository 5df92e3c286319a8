"""`--ray` on a local Ray cluster with 2 CPU actors: the same table as the single process, row for row.

Tiny random models saved to tmp folders, loaded by path in each actor. The single-process table is
the reference: ids, tokens and ranks must match exactly, floats to float64 round-off. A crashing
actor (os._exit in its first call, triggered by a marker file only this test writes) must be
restarted by Ray and the table must still be complete.
"""

import contextlib
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from klviz.cli import build_parser, main
from klviz.engine.columns import BAND_COLUMNS, RANK_COLUMNS, SCALAR_COLUMNS, TOP_COLUMNS
from tests.helpers.tiny import make_tiny_model, make_tokenizer, perturbed, save_model, torch_threads

ray = pytest.importorskip("ray", reason="the optional Ray extra (requirements-ray.txt) is not installed")
REPO = Path(__file__).resolve().parents[2]
KEYS = ["prompt_id", "sample_id", "position", "token_id", "token"]
EXACT = KEYS + list(RANK_COLUMNS) + [c for c in TOP_COLUMNS if c.endswith("_ids")]
FLOATS = list(SCALAR_COLUMNS) + list(BAND_COLUMNS) + [c for c in TOP_COLUMNS if not c.endswith("_ids")]
WORDS = ["the", " food", " was", " very", " good", " bad", " and", " staff", " not", " room"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """A 2-CPU local cluster, one for the whole module; actors import this checkout's klviz and tests
    (PYTHONPATH). log_to_driver=False: the actors' output stays in Ray's log files rather than being
    streamed into this process (docs.ray.io, ray.init and "Configuring Logging"); the tests read only the
    CLI's own stderr."""
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": env})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(policy, sft, run): a pair of tiny Llamas and a run folder of two checkpoint-<step> folders."""
    root = tmp_path_factory.mktemp("models")
    tok = make_tokenizer()
    sft_model = make_tiny_model("llama", len(tok), seed=0)
    for step, scale in ((5, 0.1), (20, 0.3)):
        save_model(perturbed(sft_model, scale=scale, seed=step), root / "run" / f"checkpoint-{step}", tok)
    return (save_model(perturbed(sft_model, seed=1), root / "policy", tok), save_model(sft_model, root / "sft", tok),
            root / "run")


@pytest.fixture(scope="module")
def score_input(tmp_path_factory):
    """7 responses of varied lengths (so batches of 2 sort and pad), text and id rows mixed."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("in") / "in.jsonl"
    lines = []
    for n in range(7):
        words = rng.choice(WORDS, size=int(rng.integers(1, 7))).tolist()
        if n % 3 == 2:
            lines.append({"prompt_ids": [0, 5, 6], "response_ids": [int(t) for t in rng.integers(3, 290, len(words))],
                          "prompt_id": f"ids{n}", "sample_id": n})
        else:
            lines.append({"prompt": "the food was", "response": "".join(words)})
    lines[0]["reward"] = 0.5  # an extra column one input has: every batch's rows must carry it (None elsewhere)
    path.write_text("".join(json.dumps(l) + "\n" for l in lines))
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def single(capsys, *argv):
    """The single-process reference on 1 torch thread, as each 1-CPU actor runs: float32 matmuls (hence
    the logits) differ in the last bits between thread counts, in one process as much as across Ray."""
    with torch_threads(1):
        return _run(capsys, *argv)


def assert_same_table(ray_out: Path, single_out: Path):
    got, want = pd.read_parquet(ray_out), pd.read_parquet(single_out)
    assert list(got.columns) == list(want.columns) and len(got) == len(want) > 0
    for c in EXACT + (["source"] if "source" in want else []):
        assert [np.asarray(v).tolist() for v in got[c]] == [np.asarray(v).tolist() for v in want[c]], c
    for c in FLOATS:
        np.testing.assert_allclose(np.stack(got[c].map(np.asarray)), np.stack(want[c].map(np.asarray)),
                                   rtol=1e-12, atol=1e-12, err_msg=c)
    assert pq.read_schema(ray_out).metadata == pq.read_schema(single_out).metadata  # klviz's and pandas'


def test_analyze_on_ray_samples_the_same_responses(models, tmp_path, capsys):
    policy, sft, _ = models
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the food was\nthe room was not\n")
    common = ["analyze", "--policy", policy, "--sft", sft, "--prompts", prompts, "--samples-per-prompt", 2,
              "--max-new-tokens", 5, "--batch-size", 3, "--top-k", 3, "--seed", 7, "--sample-from", "both"]
    from klviz.distributed_tables import analyze_on_ray

    single(capsys, *common, "--out", tmp_path / "single.parquet")
    marker, calls = tmp_path / "crash-once", tmp_path / "calls.txt"
    marker.touch()
    args = build_parser().parse_args([str(a) for a in common + ["--out", tmp_path / "ray.parquet", "--ray",
                                                                "--actors", 2]])
    assert analyze_on_ray(args, actor_cls=_crashing_actor(marker, calls)) == 0
    assert not marker.exists()  # an actor died on its first unit, and was restarted: the table is complete
    assert_same_table(tmp_path / "ray.parquet", tmp_path / "single.parquet")
    assert set(pd.read_parquet(tmp_path / "ray.parquet")["source"]) == {"policy", "sft"}
    # Sampling and scoring ran on the same actors: the pair was loaded by 2 actors and the crashed one's
    # restart, 3 in all (a pool per pass: 5).
    calls = [line.split() for line in calls.read_text().splitlines()]
    assert {kind for _, kind in calls} == {"init", "SampleUnit", "ScoreUnit"}
    assert sum(kind == "init" for _, kind in calls) == 3, calls


def _crashing_actor(marker: Path, calls: Path | None = None):
    """PairActor whose first call anywhere kills its process; with `calls`, the pid of each construction
    ("init") and of each call after the crash (its unit's kind)."""
    from klviz.distributed import PairActor

    class CrashingActor(PairActor):
        def __init__(self, spec, work=None):
            super().__init__(spec, work)
            if calls is not None:
                with calls.open("a") as f:
                    f.write(f"{os.getpid()} init\n")

        def run_batch(self, batch):
            try:
                os.unlink(marker)  # only the first call anywhere finds it
            except FileNotFoundError:
                if calls is not None:
                    with calls.open("a") as f:
                        f.writelines(f"{os.getpid()} {type(pickle.loads(bytes(x))).__name__}\n" for x in batch["payload"])
                return super().run_batch(batch)
            os._exit(1)

    return CrashingActor


def test_score_on_ray_is_the_single_process_table_even_when_an_actor_is_killed(models, score_input, tmp_path,
                                                                               capsys):
    from klviz.distributed_tables import score_on_ray

    policy, sft, _ = models
    marker = tmp_path / "crash-once"
    marker.touch()
    common = ["score", "--policy", policy, "--sft", sft, "--input", score_input, "--top-k", 4, "--batch-size", 2]
    single(capsys, *common, "--out", tmp_path / "single.parquet")
    args = build_parser().parse_args([str(a) for a in common + ["--out", tmp_path / "ray.parquet",
                                                                "--ray", "--actors", 2]])
    assert score_on_ray(args, actor_cls=_crashing_actor(marker)) == 0
    assert "4 batches on Ray" in capsys.readouterr().err  # 7 inputs, batches of 2
    assert not marker.exists()  # the crash happened
    assert_same_table(tmp_path / "ray.parquet", tmp_path / "single.parquet")


def _units_in_process(ray, settings, spec, units, actor_cls=None, work=None):
    """klviz.distributed.run_units without the pool: the same rows through one PairActor in this process
    (its __call__, as map_batches calls it, one unit per batch) and the same collect, for the runs below
    whose Ray pipeline the other tests cover."""
    from dataclasses import replace

    from klviz.distributed import PairActor, collect

    actor = PairActor(replace(spec, threads=1), work)
    rows = [actor({"unit": np.array([k]), "payload": np.array([pickle.dumps(u)], dtype=object)})
            for k, u in enumerate(units)]
    return collect([{"unit": r["unit"][0], "result": r["result"][0]} for r in rows], len(units))


@contextlib.contextmanager
def _pool_in_process(ray, settings, spec, actor_cls=None):
    """klviz.distributed.actor_pool without Ray: each pass through _units_in_process."""
    yield lambda units: _units_in_process(ray, settings, spec, units)


@pytest.mark.parametrize("responses", ["input", "prompts"])
def test_trajectory_on_ray_is_the_single_process_series(models, score_input, responses, tmp_path, capsys,
                                                        monkeypatch):
    """Each actor runs the SFT decoder once per batch of its run of batches and scores both checkpoints
    against it; --prompts samples from the SFT model on the pool's actors first. The --prompts run takes
    its units through the actor class in this process (_pool_in_process): another actor pool (each actor
    importing torch) costs ~40 s of the suite, and two passes on one pool are the analyze test's."""
    _, sft, run = models
    if responses == "prompts":
        from klviz import distributed_tables

        monkeypatch.setattr(distributed_tables, "actor_pool", _pool_in_process)
        src = tmp_path / "prompts.txt"
        src.write_text("the food was\nthe staff\n")
        what = ["--prompts", src, "--samples-per-prompt", 2, "--max-new-tokens", 5, "--seed", 3]
    else:
        what = ["--input", score_input]
    common = ["trajectory", "--sft", sft, "--checkpoints", run, *what, "--top-k", 3, "--batch-size", 2]
    single(capsys, *common, "--out", tmp_path / "single.parquet")
    err = _run(capsys, *common, "--out", tmp_path / "ray.parquet", "--ray", "--actors", 2)
    assert "2 runs of batches on Ray" in err
    assert_same_table(tmp_path / "ray.parquet", tmp_path / "single.parquet")
    got = pd.read_parquet(tmp_path / "ray.parquet")
    assert got["checkpoint"].unique().tolist() == ["checkpoint-5", "checkpoint-20"]
    assert got["step"].unique().tolist() == [5, 20]


def test_bad_input_names_file_and_line_before_ray_runs_and_writes_nothing(models, tmp_path, capsys):
    policy, sft, _ = models
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"prompt": "a", "response": "b"}\n{"prompt": oops}\n')
    code = main(["score", "--policy", str(policy), "--sft", str(sft), "--input", str(inp),
                 "--out", str(tmp_path / "out.parquet"), "--ray", "--actors", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1] == f"klviz: error: {inp}, line 2: not valid JSON (Expecting value)."
    assert list(tmp_path.iterdir()) == [inp]


@pytest.mark.parametrize("bad", ["empty response", "id outside the vocabulary"])
def test_an_input_error_met_in_the_actors_is_the_single_process_sentence(models, bad, tmp_path, capsys, monkeypatch):
    """`score --ray` tokenizes and checks the input in the actors (klviz.distributed.ScoreWork): an input
    only tokenizing shows bad fails there, with the single process's sentence, exit 2, nothing written.
    The units go through the actor class in this process (_units_in_process)."""
    from klviz import distributed, distributed_tables

    monkeypatch.setattr(distributed_tables, "run_units", _units_in_process)
    monkeypatch.setattr(distributed, "TOKENIZE_CHUNK", 1)  # the bad input is checked in a later chunk than the first
    policy, sft, _ = models
    inp = tmp_path / "in.jsonl"
    last = ({"prompt": "the food was", "response": ""} if bad == "empty response"
            else {"prompt_ids": [0, 5], "response_ids": [7, 100_000]})
    inp.write_text("".join(json.dumps(r) + "\n" for r in [{"prompt": "the food was", "response": " good"}, last]))
    common = ["score", "--policy", policy, "--sft", sft, "--input", inp, "--batch-size", 1]
    errors = []
    for extra in ([], ["--ray", "--actors", 2]):
        assert main([str(a) for a in common + ["--out", tmp_path / "out.parquet", *extra]]) == 2
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])
    want = (f"{inp}, line 2: the response is empty" if bad == "empty response"
            else "Input 1 (prompt_id 2) has token id 100000, outside the model's vocabulary of")
    assert errors[0] == errors[1] and errors[0].startswith(f"klviz: error: {want}"), errors
    assert list(tmp_path.iterdir()) == [inp]


def test_without_ray_the_flag_is_one_sentence_exit_2(models, score_input, tmp_path, capsys, monkeypatch):
    from klviz.distributed import RAY_MISSING

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    policy, sft, _ = models
    code = main(["score", "--policy", str(policy), "--sft", str(sft), "--input", str(score_input),
                 "--out", str(tmp_path / "out.parquet"), "--ray"])
    assert code == 2 and capsys.readouterr().err.strip() == f"klviz: error: {RAY_MISSING}"
    assert not (tmp_path / "out.parquet").exists()


def test_an_error_in_an_actor_is_the_single_process_sentence_and_a_complete_table_stays(models, tmp_path, capsys):
    """A KlvizError raised inside an actor (here: no room for a prompt in the 128-token context): one
    sentence, exit 2, and the complete table already at --out is left as it was, with nothing beside it."""
    policy, sft, _ = models
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the food was\n")
    out = tmp_path / "out.parquet"
    pd.DataFrame({"token_id": [1, 2]}).to_parquet(out)
    before = out.read_bytes()
    code = main(["analyze", "--policy", str(policy), "--sft", str(sft), "--prompts", str(prompts),
                 "--max-new-tokens", "200", "--out", str(out), "--ray", "--actors", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("klviz: error: max_new_tokens=200 leaves no room for a prompt in the "
                                            "models' 128-token context: lower --max-new-tokens.")
    assert sorted(tmp_path.iterdir()) == sorted([prompts, out]) and out.read_bytes() == before
