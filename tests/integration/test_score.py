"""score() on tiny random GPT-2 / Llama / Qwen2 / Qwen3 / Mistral / Gemma-2 models against a float64 brute force.

The brute force runs the model's own forward in float64 over the whole sequence and sums over the
vocabulary in Python, so it checks the head split, the next-token shift, padding and batching at once.
"""

import copy

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, Gemma2Config, GPT2Config, LlamaConfig, MistralConfig,
                          PreTrainedTokenizerFast, Qwen2Config, Qwen3Config)

from klviz.engine import divergence
from klviz.engine.divergence import ScoreInput, score
from klviz.engine.heads import split_model
from tests.helpers.brute import assert_row_close, brute_row

V = 61
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=48, max_position_embeddings=64)
CONFIGS = {
    "gpt2": lambda: GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                               bos_token_id=0, eos_token_id=0),
    "llama": lambda: LlamaConfig(vocab_size=V, **SMALL),
    "qwen2": lambda: Qwen2Config(vocab_size=V, **SMALL),
    "qwen3": lambda: Qwen3Config(vocab_size=V, head_dim=8, **SMALL),
    "mistral": lambda: MistralConfig(vocab_size=V, **SMALL),
    "gemma2": lambda: Gemma2Config(vocab_size=V, head_dim=8, final_logit_softcapping=3.0, **SMALL),
}


def tiny_tokenizer():
    vocab = {f"w{i}": i for i in range(V)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w1", pad_token="w0")


def tiny_pair(kind, seed=0):
    torch.manual_seed(seed)
    sft = AutoModelForCausalLM.from_config(CONFIGS[kind]()).eval()
    policy = copy.deepcopy(sft)
    with torch.no_grad():  # move the policy away from the SFT model, more in some places than others
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return policy, sft


def inputs(seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        P, R = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 9, (1,), generator=g))
        ids = torch.randint(0, V, (P + R,), generator=g).tolist()
        out.append(ScoreInput(prompt_ids=ids[:P], response_ids=ids[P:], prompt_id=f"p{i}", sample_id=i % 2))
    return out


def brute_table(policy, sft, exs, top_k):
    """Rows from each model's full float64 forward, one sequence at a time, no padding."""
    pol64, sft64 = copy.deepcopy(policy).double(), copy.deepcopy(sft).double()
    rows = []
    for ex in exs:
        ids = torch.tensor([ex.prompt_ids + ex.response_ids])
        with torch.no_grad():
            lp, lq = pol64(ids).logits[0], sft64(ids).logits[0]
        P = len(ex.prompt_ids)
        for t, y in enumerate(ex.response_ids):
            rows.append(brute_row(lp[P + t - 1].tolist(), lq[P + t - 1].tolist(), y, top_k))
    return rows


@pytest.mark.parametrize("path", ["fused", "torch"])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_score_matches_float64_forward(kind, path, monkeypatch):
    if path == "torch":  # the GPU code path (torch log-softmax, token_stats_torch), run on the CPU
        monkeypatch.setattr(divergence, "HAVE_NUMBA", False)
    policy, sft = tiny_pair(kind)
    exs = inputs()
    df = score(policy, sft, tiny_tokenizer(), exs, top_k=5, batch_size=3)
    want = brute_table(policy, sft, exs, top_k=5)
    assert len(df) == len(want) == sum(len(e.response_ids) for e in exs)
    for (_, got), w in zip(df.iterrows(), want):
        assert_row_close(got.to_dict(), w, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_split_head_reproduces_model_logits(kind):
    policy, _ = tiny_pair(kind)
    ids = torch.randint(0, V, (2, 9))
    mask = torch.ones_like(ids)
    run, head = split_model(policy)
    with torch.no_grad():
        want = policy(ids, attention_mask=mask).logits
        torch.testing.assert_close(head(run(ids, mask)), want, rtol=1e-5, atol=1e-5)
        h = run(ids, mask)
        h = h.reshape(-1, h.shape[-1])
        out = torch.full((h.shape[0], want.shape[-1]), float("nan"))  # the engine's reused CPU buffer
        got = head(h, out=out)  # matmul and soft-cap into `out`
        assert got.data_ptr() == out.data_ptr()
        torch.testing.assert_close(got, want.reshape(-1, want.shape[-1]), rtol=1e-5, atol=1e-5)


def test_padding_and_batching_match_one_at_a_time():
    policy, sft = tiny_pair("llama", seed=1)
    exs = inputs(seed=3, n=7)
    tok = tiny_tokenizer()
    together = score(policy, sft, tok, exs, batch_size=7)
    alone = [score(policy, sft, tok, [e], batch_size=1) for e in exs]
    import pandas as pd
    alone = pd.concat(alone, ignore_index=True)
    assert together[["prompt_id", "sample_id", "position", "token_id"]].equals(
        alone[["prompt_id", "sample_id", "position", "token_id"]])
    for col in ("kl_reverse", "kl_forward", "log_ratio", "tv", "entropy_policy"):
        torch.testing.assert_close(torch.tensor(together[col].values), torch.tensor(alone[col].values),
                                   rtol=1e-5, atol=1e-6)


def test_shift_first_response_token_is_predicted_by_last_prompt_position():
    policy, sft = tiny_pair("gpt2")
    ex = ScoreInput(prompt_ids=[3, 4, 5], response_ids=[6, 7])
    df = score(policy, sft, tiny_tokenizer(), [ex])
    with torch.no_grad():
        lp = torch.log_softmax(policy(torch.tensor([[3, 4, 5, 6, 7]])).logits[0], -1)
    # logits at position P+t-1 predict response token t: position 2 predicts id 6, position 3 id 7
    torch.testing.assert_close(torch.tensor(df["logp_policy"].values, dtype=torch.float32),
                               torch.stack([lp[2, 6], lp[3, 7]]), rtol=1e-5, atol=1e-6)
    assert df["position"].tolist() == [0, 1] and df["token"].tolist() == ["w6", "w7"]


def test_extra_columns_and_identity_pair():
    policy, _ = tiny_pair("qwen2")
    exs = [ScoreInput([1, 2], [3, 4, 5], "a", 0, {"source": "policy"})]
    df = score(policy, policy, tiny_tokenizer(), exs)
    assert df["source"].tolist() == ["policy"] * 3
    assert (df["kl_reverse"] == 0).all() and (df["kl_forward"] == 0).all() and (df["tv"] == 0).all()


def test_fallback_forward_path_matches(monkeypatch):
    """An architecture whose head can't be split runs the model's own forward: same numbers."""
    policy, sft = tiny_pair("llama", seed=2)
    exs = inputs(seed=4)
    split = score(policy, sft, tiny_tokenizer(), exs, top_k=3)
    monkeypatch.setattr("klviz.engine.heads.SPLIT_HEAD_TYPES", {})
    full = score(policy, sft, tiny_tokenizer(), exs, top_k=3)
    for col in ("kl_reverse", "kl_forward", "log_ratio", "tv"):
        torch.testing.assert_close(torch.tensor(full[col].values), torch.tensor(split[col].values),
                                   rtol=1e-5, atol=1e-6)


def test_bad_token_id_and_empty_prompt_are_refused():
    from klviz.errors import KlvizError

    policy, sft = tiny_pair("gpt2")
    with pytest.raises(KlvizError, match="outside the model's vocabulary of 61"):
        score(policy, sft, tiny_tokenizer(), [ScoreInput([1, 2], [3, 999])])
    with pytest.raises(KlvizError, match="empty prompt"):
        score(policy, sft, tiny_tokenizer(), [ScoreInput([], [3])])
