"""The sample data: `make_sample_data(quick=True)` end to end and the shipped files (PPO on the optional real
model, SmolLM2: tests/integration/test_smollm2.py, which loads it once for all its tests).

The quick run trains tiny models (about a minute); the shipped files are checked as they are, with
plain transformers, no klviz loader in between.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from klviz.errors import KlvizError
from klviz.ppo.lexicon import NEGATIVE, NEUTRAL, POSITIVE, sentiment_score
from klviz.sample.corpus import all_adjectives, check_lexicon, is_review, make_corpus
from klviz.sample.make import MANIFEST, check_out, make_sample_data
from klviz.sample.policies import POLICY_FOLDERS
from klviz.sample.tokenizer import train_tokenizer
from klviz.shipped_view import WARM_TABLE, WARM_VIEW

SHIPPED = Path(__file__).resolve().parents[2] / "sample_data"
MODEL_FOLDERS = ("sft", *POLICY_FOLDERS)
MAX_SHIPPED_MB = 25
MIN_PROMPTS = 24
FLUENT_FRACTION = 0.85
"""Share of the shipped SFT model's samples that must be complete, grammatical reviews (it scores about 0.94;
its slips are adjectives of the wrong subject kind, "the soup was cozy")."""
MIN_KL_PER_TOKEN = 0.05
"""Issue 5: the shipped policy's mean exact KL(policy || SFT) on its own samples, nats per token."""


def _load(folder: Path):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _prompts(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "prompts.jsonl").read_text().splitlines() if line.strip()]


@torch.no_grad()
def _samples(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int = 0) -> list[list[int]]:
    """One sampled response (ids, EOS and padding removed) per prompt."""
    torch.manual_seed(seed)
    batch = tokenizer(prompts, return_tensors="pt", padding=True)  # left-padded, BOS added
    out = model.generate(**batch, do_sample=True, top_k=0, max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    responses = []
    for row in out[:, batch.input_ids.shape[1]:].tolist():  # (B, new tokens)
        cut = row.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in row else len(row)
        responses.append(row[:cut])
    return responses


def test_corpus_is_deterministic_grammatical_and_mixed():
    corpus = make_corpus(2000, seed=7)
    assert corpus == make_corpus(2000, seed=7) and corpus != make_corpus(2000, seed=8)
    assert all(is_review(r) for r in corpus)
    check_lexicon()
    assert all_adjectives() == POSITIVE | NEGATIVE | NEUTRAL  # the reward sees every adjective
    scores = [sentiment_score(r) for r in corpus]
    positive, negative = sum(s > 0 for s in scores), sum(s < 0 for s in scores)
    assert abs(sum(scores) / len(scores)) < 0.2  # neutral to mixed: room for the reward to move
    assert positive > 0.2 * len(corpus) and negative > 0.2 * len(corpus)
    for bad in ["Review: the coffee was rude .", "Review: the room felt not clean .", "Review: the room was clean"]:
        assert not is_review(bad), bad


def test_tokenizer_keeps_words_whole_and_round_trips():
    corpus = make_corpus(3000, seed=0)
    tokenizer = train_tokenizer(corpus)
    words = {w for r in corpus for w in r.split()} - {"Review:"}
    split = [w for w in words if len(tokenizer(" " + w, add_special_tokens=False).input_ids) != 1]
    assert not split
    ids = tokenizer(corpus[0]).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == corpus[0]


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("quick") / "sample"
    manifest = make_sample_data(out, quick=True, progress=False)
    return out, manifest


def test_quick_run_writes_every_file(quick):
    out, manifest = quick
    names = {p.name for p in out.iterdir()}
    assert names == {*MODEL_FOLDERS, "prompts.jsonl", "README.md", WARM_TABLE, WARM_VIEW, MANIFEST}  # no temp leftovers
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    prompts = _prompts(out)
    assert len(prompts) >= MIN_PROMPTS and len({p["id"] for p in prompts}) == len(prompts)
    assert all(p["prompt"].startswith("Review: ") for p in prompts)
    assert json.loads((out / MANIFEST).read_text())["sft"]["parameters"] == manifest["sft"]["parameters"]
    for folder in MODEL_FOLDERS:
        assert list((out / folder).glob("*.safetensors")), folder
        assert not list((out / folder).glob("*.bin")), folder


def test_quick_output_loads_and_scores(quick):
    from klviz.engine.divergence import ScoreInput, score

    out, _ = quick
    sft, tokenizer = _load(out / "sft")
    policy, policy_tokenizer = _load(out / "policy")
    assert policy_tokenizer.get_vocab() == tokenizer.get_vocab()
    texts = [p["prompt"] for p in _prompts(out)[:4]]
    responses = _samples(policy, tokenizer, texts, max_new_tokens=8)
    inputs = [ScoreInput(prompt_ids=tokenizer(t).input_ids, response_ids=r, prompt_id=str(i), sample_id=0)
              for i, (t, r) in enumerate(zip(texts, responses)) if r]
    table = score(policy, sft, tokenizer, inputs)
    assert len(table) == sum(len(x.response_ids) for x in inputs) > 0
    assert (table["kl_reverse"] >= -1e-6).all() and (table["kl_forward"] >= -1e-6).all()
    assert torch.isfinite(torch.tensor(table["logp_policy"].to_numpy())).all()


def test_figures_match_klviz_analyze(quick, tmp_path):
    from klviz.cli import main

    out, manifest = quick
    settings = manifest["config"]["measure"]
    table_path = tmp_path / "policy.parquet"
    argv = ["analyze", "--policy", str(out / "policy"), "--sft", str(out / "sft"),
            "--prompts", str(out / "prompts.jsonl"), "--out", str(table_path),
            "--samples-per-prompt", str(settings["samples_per_prompt"]),
            "--max-new-tokens", str(settings["max_new_tokens"]), "--seed", str(settings["seed"]),
            "--batch-size", str(settings["batch_size"]), "--sample-from", settings["sample_from"],
            "--device", "cpu", "--dtype", "float32"]
    assert main(argv) == 0
    table = pd.read_parquet(table_path)
    policy = table[table["source"] == "policy"]
    figures = manifest["figures"]["policy"]["policy"]
    assert policy["kl_reverse"].mean() == pytest.approx(figures["kl_reverse_per_token"], rel=1e-6)
    per_sequence = policy.groupby(["prompt_id", "sample_id"])["kl_reverse"].sum().mean()
    assert per_sequence == pytest.approx(figures["kl_reverse_per_sequence"], rel=1e-6)
    assert f"{figures['kl_reverse_per_token']:.4f}" in (out / "README.md").read_text()


def test_refuses_a_folder_that_is_not_a_sample(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(KlvizError, match="not a klviz sample folder"):
        check_out(tmp_path)
    with pytest.raises(KlvizError, match="is a file"):
        check_out(tmp_path / "notes.txt")
    check_out(tmp_path / "new")  # a new folder is fine
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / MANIFEST).write_text("{}")
    check_out(tmp_path / "old")  # an earlier sample folder may be replaced


def test_make_sample_data_refuses_before_training(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(KlvizError):
        make_sample_data(tmp_path, quick=True, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


shipped = pytest.mark.skipif(not (SHIPPED / MANIFEST).exists(), reason="sample_data/ has not been generated")


@shipped
def test_shipped_files_load_with_plain_transformers():
    total = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert total < MAX_SHIPPED_MB * 1_000_000
    assert len(_prompts(SHIPPED)) >= MIN_PROMPTS
    vocab = None
    for folder in MODEL_FOLDERS:
        model, tokenizer = _load(SHIPPED / folder)
        assert list((SHIPPED / folder).glob("*.safetensors"))
        vocab = vocab or tokenizer.get_vocab()
        assert tokenizer.get_vocab() == vocab
        assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)
        assert tokenizer.decode(tokenizer(" clean", add_special_tokens=False).input_ids) == " clean"


@shipped
def test_shipped_sft_samples_are_fluent():
    model, tokenizer = _load(SHIPPED / "sft")
    texts = [p["prompt"] for p in _prompts(SHIPPED)]
    responses = _samples(model, tokenizer, texts * 2, max_new_tokens=48)
    reviews = [t + tokenizer.decode(r, skip_special_tokens=True) for t, r in zip(texts * 2, responses)]
    fluent = [is_review(r) for r in reviews]
    assert sum(fluent) >= FLUENT_FRACTION * len(reviews), [r for r, ok in zip(reviews, fluent) if not ok]


@shipped
def test_shipped_policy_drifted_as_the_readme_says():
    figures = json.loads((SHIPPED / MANIFEST).read_text())["figures"]["policy"]
    assert figures["policy"]["kl_reverse_per_token"] >= MIN_KL_PER_TOKEN
    assert figures["policy"]["reward_mean"] > figures["sft"]["reward_mean"]
    readme = (SHIPPED / "README.md").read_text()
    assert f"{figures['policy']['kl_reverse_per_token']:.4f}" in readme
