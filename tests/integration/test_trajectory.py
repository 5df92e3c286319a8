"""`klviz trajectory`: a checkpoint series equals separate `klviz score` runs row for row, and the engine's
scoring against a precomputed SFT side matches the float64 brute force."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from klviz.cli import main
from klviz.engine.divergence import score_tensors
from klviz.engine.reference import reference_side, score_tensors_against
from klviz.errors import KlvizError
from klviz.io import read_metadata
from klviz.trajectory import find_checkpoints
from tests.helpers.brute import assert_row_close
from tests.helpers.tiny import make_tiny_model, make_tokenizer, perturbed, save_model, save_pair
from tests.integration.test_score import brute_table, inputs, tiny_pair


def test_scoring_against_a_reference_matches_float64_and_score_tensors():
    policy, sft = tiny_pair("llama", seed=2)
    exs = inputs(seed=4, n=6)
    ref = reference_side(sft, exs, batch_size=4)
    order, cols = score_tensors_against(policy, ref, exs, top_k=5)
    want_order, want = score_tensors(policy, sft, exs, top_k=5, batch_size=4)
    assert order == want_order
    for name in want:  # the same batches and chunks: the very same numbers
        np.testing.assert_array_equal(cols[name], want[name], err_msg=name)
    brute = brute_table(policy, sft, [exs[i] for i in order], top_k=5)
    for r, w in enumerate(brute):
        assert_row_close({k: v[r] for k, v in cols.items()}, w, rtol=2e-4, atol=2e-5)
    other = perturbed(sft, scale=0.5, seed=9)  # a second policy reuses the same reference
    _, cols2 = score_tensors_against(other, ref, exs, top_k=5)
    _, want2 = score_tensors(other, sft, exs, top_k=5, batch_size=4)
    np.testing.assert_array_equal(cols2["kl_forward"], want2["kl_forward"])


def test_reference_refuses_another_vocabulary():
    _, sft = tiny_pair("llama")
    exs = inputs(n=2)
    ref = reference_side(sft, exs)
    with pytest.raises(KlvizError, match="share one vocabulary"):
        score_tensors_against(make_tiny_model("llama", vocab_size=ref.vocab_size + 3), ref, exs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run's output_dir as the Trainer leaves it: checkpoint-<step> folders (one a LoRA adapter)."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("run")
    policy, sft = save_pair(root, kind="llama")
    tok = make_tokenizer()
    sft_model = make_tiny_model("llama", len(tok), seed=0)
    for step, scale in ((5, 0.1), (20, 0.3)):
        save_model(perturbed(sft_model, scale=scale, seed=step), root / "out" / f"checkpoint-{step}", tok)
    torch.manual_seed(3)
    peft_model = get_peft_model(copy.deepcopy(sft_model), LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                                                                      target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(str(root / "out" / "checkpoint-10"))
    (root / "out" / "runs").mkdir()  # what else a Trainer output_dir holds is ignored
    return root, sft


def test_checkpoints_found_in_step_order(run_dir):
    root, _ = run_dir
    got = find_checkpoints([str(root / "out")])
    assert [(c.name, c.step) for c in got] == [("checkpoint-5", 5), ("checkpoint-10", 10), ("checkpoint-20", 20)]
    assert [c.name for c in find_checkpoints([str(root / "out" / "checkpoint-2*")])] == ["checkpoint-20"]
    listed = find_checkpoints([f"{root / 'out' / 'checkpoint-20'},{root / 'out' / 'checkpoint-5'}"])
    assert [c.step for c in listed] == [5, 20]
    with pytest.raises(KlvizError, match="neither a checkpoint"):
        find_checkpoints([str(root / "out" / "runs")])


def test_trajectory_equals_separate_score_runs(run_dir, tmp_path, capsys):
    root, sft = run_dir
    inp = tmp_path / "r.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in [
        {"input": "the food was", "output": " very good", "step": 1, "score": 1.0},
        {"input": "the room", "output": " and the staff was not bad", "step": 1, "score": 0.0},
        {"input": "the food was", "output": " bad", "step": 2, "score": -1.0}]))
    out = tmp_path / "traj.parquet"
    code = main(["trajectory", "--sft", str(sft), "--checkpoints", str(root / "out"), "--input", str(inp),
                 "--out", str(out), "--top-k", "4", "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    traj = pd.read_parquet(out)
    assert traj["checkpoint"].unique().tolist() == ["checkpoint-5", "checkpoint-10", "checkpoint-20"]
    for name, step in (("checkpoint-5", 5), ("checkpoint-10", 10), ("checkpoint-20", 20)):
        one = tmp_path / f"{name}.parquet"
        assert main(["score", "--policy", str(root / "out" / name), "--sft", str(sft), "--input", str(inp),
                     "--out", str(one), "--top-k", "4", "--batch-size", "2"]) == 0
        want = pd.read_parquet(one)
        got = traj[traj["checkpoint"] == name].drop(columns=["checkpoint"]).reset_index(drop=True)
        assert (got.pop("step") == step).all()
        got = got.rename(columns={"rollout_step": "step"})  # the rollouts' logged step
        assert got.columns.tolist() == want.columns.tolist() and len(got) == len(want)
        for col in want.columns:
            a, b = got[col].tolist(), want[col].tolist()
            if isinstance(a[0], (float, np.ndarray)):
                np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                                           rtol=1e-12, atol=1e-12, err_msg=f"{name} {col}")
            else:
                assert a == b, (name, col)
    assert traj.loc[traj["checkpoint"] == "checkpoint-10", "kl_reverse"].gt(0).all()  # the adapter moved it
    meta = read_metadata(out)
    assert meta["command"] == "trajectory" and meta["input_format"] == "verl"
    assert json.loads(meta["checkpoints"])["checkpoint-10"] == str(root / "out" / "checkpoint-10")
    assert "vocab" in meta


def test_trajectory_from_prompts_and_bad_series(run_dir, tmp_path, capsys):
    root, sft = run_dir
    prompts = tmp_path / "p.txt"
    prompts.write_text("the food was\nthe room\n")
    out = tmp_path / "t.parquet"
    code = main(["trajectory", "--sft", str(sft), "--checkpoints", str(root / "out" / "checkpoint-5"),
                 str(root / "out" / "checkpoint-20"), "--prompts", str(prompts), "--out", str(out),
                 "--samples-per-prompt", "2", "--max-new-tokens", "4"])
    assert code == 0, capsys.readouterr().err
    df = pd.read_parquet(out)
    assert df["source"].eq("sft").all() and sorted(df["step"].unique()) == [5, 20]
    a, b = (df[df["step"] == s][["prompt_id", "sample_id", "token_id"]].reset_index(drop=True) for s in (5, 20))
    pd.testing.assert_frame_equal(a, b)  # the same responses under each checkpoint
    code = main(["trajectory", "--sft", str(sft), "--checkpoints", str(tmp_path / "nope"), "--prompts",
                 str(prompts), "--out", str(tmp_path / "x.parquet")])
    assert code == 2 and "nope: no such checkpoint folder." in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()
