"""The mini PPO end to end on tiny random models built here: trainer, rewards, job, CLI."""

import argparse
import copy
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from klviz.cli import main as cli_main
from klviz.errors import KlvizError
from klviz.ppo.config import PPOConfig
from klviz.ppo.trainer import PPOTrainer
from klviz.cli.ppo import run as ppo_run
from klviz.ppo.rewards import get_reward
from klviz.threads import torch_threads
from tests.helpers.brute import brute_row
from tests.helpers.tiny import make_tiny_model, make_tokenizer, perturbed, save_model, tiny_config

PROMPTS = ["the food was", "the room and", "staff", "the food was very not"]
METRIC_KEYS = ("step", "reward_mean", "reward_std", "kl_reverse", "kl_forward", "k1", "k2", "k3", "kl_coef",
               "entropy", "clipfrac", "approxkl", "policy_loss", "value_loss", "response_len", "step_time_s")
BAND_KEYS = ("mass_gained_by_sft_bin", "mass_lost_by_sft_bin", "kl_reverse_by_sft_bin", "kl_forward_by_sft_bin")  # spelt out: the test pins the names


def count_good(prompts, responses):
    """A module:function reward for the registry test: occurrences of 'good'."""
    return [float(r.count("good")) for r in responses]


def broken_reward(prompts, responses):
    """A module:function reward that fails, and one that returns too few scores."""
    raise ValueError("no scores today")


def short_reward(prompts, responses):
    return [1.0]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def sft(tok):
    return make_tiny_model("gpt2", len(tok), seed=0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and the test machine's cores are shared."""
    with torch_threads(1):
        yield


def small_cfg(**overrides):
    base = dict(reward="keyword:good", steps=3, batch_size=8, max_new_tokens=6, ppo_epochs=2, minibatches=2,
                device="cpu", bands_every=2, lr=1e-2)
    return PPOConfig(**{**base, **overrides})


def test_steps_run_with_finite_metrics_and_bands(sft, tok):
    trainer = PPOTrainer(sft, tok, PROMPTS, small_cfg())
    history = [trainer.step() for _ in range(3)]
    for m in history:
        for key in METRIC_KEYS:
            assert key in m and math.isfinite(m[key]), key
    assert [m["step"] for m in history] == [1, 2, 3]
    assert [all(k in m for k in BAND_KEYS) for m in history] == [True, False, True]  # steps 1, 1 + 2
    bands = history[2]
    assert all(len(bands[k]) == 7 for k in BAND_KEYS)
    # Mass gained = mass lost = total variation, summed over tokens; KL bands sum to the KL.
    assert sum(bands["mass_gained_by_sft_bin"]) == pytest.approx(sum(bands["mass_lost_by_sft_bin"]), rel=1e-4)
    n = history[2]["response_len"] * 8
    assert sum(bands["kl_reverse_by_sft_bin"]) / 8 == pytest.approx(history[2]["kl_reverse"], rel=1e-4, abs=1e-7)
    assert 1 <= history[2]["response_len"] <= 6 and n > 0
    assert history[2]["kl_reverse"] > 0  # lr 1e-2 moved the policy


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_exact_kl_metrics_match_float64_brute_force(tok, kind):
    sft = make_tiny_model(kind, len(tok), seed=0)
    init = perturbed(sft, scale=0.2, seed=1)  # start away from the SFT model so every KL is sizeable
    trainer = PPOTrainer(sft, tok, PROMPTS, small_cfg(batch_size=6), policy_init=init)
    before = copy.deepcopy(trainer.policy).double()
    metrics = trainer.step()
    roll = trainer.last_rollout
    ref = copy.deepcopy(sft).double()
    sums = {k: [] for k in ("kl_reverse", "kl_forward", "k1", "k2", "k3")}
    for b in range(roll.response.shape[0]):
        prompt = roll.query[b][roll.query_mask[b].bool()].tolist()  # unpadded: positions start at 0
        n = int(roll.mask[b].sum())
        ids = torch.tensor([prompt + roll.response[b, :n].tolist()])
        with torch.no_grad():
            pol_logits, ref_logits = before(ids).logits[0], ref(ids).logits[0]  # (L, V)
        rows = [brute_row(pol_logits[len(prompt) + t - 1].tolist(), ref_logits[len(prompt) + t - 1].tolist(),
                          int(roll.response[b, t]), top_k=1) for t in range(n)]  # position P+t-1 predicts t
        for k in sums:
            sums[k].append(sum(r[k] for r in rows))
    for k, per_response in sums.items():
        assert metrics[k] == pytest.approx(sum(per_response) / len(per_response), rel=2e-4, abs=1e-6), k
    assert metrics["kl_reverse"] > 0.05


def test_fused_activation_is_the_same_function(sft, tok):
    from klviz.ppo.rollout import fuse_activations

    fused = copy.deepcopy(sft)
    assert fuse_activations(fused) == 2  # one MLP activation per block of the tiny GPT-2
    ids = torch.tensor([tok("the food was very good and the room").input_ids])
    torch.testing.assert_close(fused(ids).logits, sft(ids).logits, rtol=1e-5, atol=1e-5)


def eos_prone(model, tok, boost=4.0):
    """A copy of `model` whose EOS logit is about `boost` everywhere, so responses end at varied lengths."""
    from klviz.ppo.rollout import head_inputs

    out = copy.deepcopy(model)
    with torch.no_grad(), head_inputs(out) as captured:
        out(torch.tensor([tok(" ".join(PROMPTS)).input_ids]))
        mean = captured[-1][0].mean(0)  # (H,) typical input of the output head
        out.get_output_embeddings().weight[tok.eos_token_id] = boost * mean / mean.dot(mean)
    return out


def test_length_chunks_are_exact(tok, monkeypatch):
    import klviz.ppo.rollout as rollout_mod

    sft = eos_prone(make_tiny_model("llama", len(tok), seed=0), tok)
    cfg = small_cfg(batch_size=12, minibatches=1, ppo_epochs=1, max_new_tokens=8)
    grads = []
    for rows_per_chunk in (3, 1000):  # four length chunks vs one dense pass
        monkeypatch.setattr(rollout_mod, "ROWS_PER_CHUNK", rows_per_chunk)
        trainer = PPOTrainer(sft, tok, PROMPTS, cfg, policy_init=perturbed(sft, 0.2))
        roll = trainer.rollout()
        assert len(set(roll.mask.sum(1).tolist())) > 2  # responses of several lengths: chunks differ
        ref = trainer.ref_logprobs(roll)
        dense, _ = rollout_mod.response_forward(sft, roll.query, roll.query_mask, roll.response)
        sel = roll.mask.bool()
        torch.testing.assert_close(ref[sel], torch.log_softmax(dense.float(), -1)[sel], rtol=1e-5, atol=1e-5)
        monkeypatch.setattr(trainer.optimizer, "step", lambda: None)  # keep the gradients, skip the update
        scores = trainer._scores(roll)
        adv, ret = trainer._advantages(roll, scores, ref)
        trainer._update(roll, ref, adv, ret)
        grads.append([p.grad.clone() for p in trainer.policy.parameters()])
    for chunked, whole in zip(*grads):
        torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-7)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_reproducible_by_seed_and_sft_untouched(sft, tok):
    sft_before = _params(sft)
    flags = (sft.training, [p.requires_grad for p in sft.parameters()])
    runs = []
    for seed in (0, 0, 1):
        trainer = PPOTrainer(sft, tok, PROMPTS, small_cfg(seed=seed))
        metrics = [trainer.step() for _ in range(2)]
        runs.append((metrics, trainer.last_rollout.texts, _params(trainer.policy)))
    drop = lambda ms: [{k: v for k, v in m.items() if k != "step_time_s"} for m in ms]  # noqa: E731
    assert drop(runs[0][0]) == drop(runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert all(torch.equal(runs[0][2][k], runs[1][2][k]) for k in runs[0][2])
    assert runs[0][1] != runs[2][1]  # another seed samples other responses
    after = _params(sft)
    assert all(torch.equal(sft_before[k], after[k]) for k in sft_before)
    assert (sft.training, [p.requires_grad for p in sft.parameters()]) == flags
    assert not any(m._forward_hooks for m in sft.modules())
    # and the policy did move
    assert any(not torch.equal(runs[0][2][k], sft_before[k]) for k in sft_before)


def test_save_loads_back(sft, tok, tmp_path):
    trainer = PPOTrainer(sft, tok, PROMPTS, small_cfg())
    trainer.step()
    out = trainer.save(tmp_path / "policy")
    trainer.step()
    out = trainer.save(tmp_path / "policy")  # overwrite an earlier save
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    want = trainer.policy.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no temp folders left behind


@pytest.mark.parametrize("placement,estimator", [("reward", "k2"), ("reward", "k3"), ("reward", "exact-reverse"),
                                                 ("loss", "k1"), ("loss", "k3"), ("loss", "exact-forward"),
                                                 ("none", "k1")])
def test_every_placement_and_estimator_trains(sft, tok, placement, estimator):
    trainer = PPOTrainer(sft, tok, PROMPTS, small_cfg(kl_placement=placement, kl_estimator=estimator, steps=2))
    for _ in range(2):
        m = trainer.step()
    assert all(math.isfinite(m[k]) for k in METRIC_KEYS)


def test_adaptive_controller_moves_beta(sft, tok):
    trainer = PPOTrainer(sft, tok, PROMPTS, small_cfg(target_kl=1e-3, kl_horizon=100, kl_coef=0.1),
                         policy_init=perturbed(sft, scale=0.2))  # KL well above the target from step 1
    betas = [trainer.step()["kl_coef"] for _ in range(3)]
    assert betas[0] == 0.1 and betas[2] > betas[1] > betas[0]  # KL above a tiny target: beta grows


def test_rewards_registry(tok, tmp_path):
    prompts, responses = ["a", "b"], [" good food", " very bad"]
    assert get_reward("keyword:good", tok)(prompts, responses).tolist() == [1.0, 0.0]
    assert get_reward("length", tok)(prompts, responses).tolist() == [2.0, 2.0]
    assert get_reward(f"{__name__}:count_good", tok)(prompts, responses).tolist() == [1.0, 0.0]
    sentiment = get_reward("sentiment", tok)(["Review: the food was"], [" very good ."])
    assert 0 < float(sentiment[0]) < 1
    with pytest.raises(KlvizError, match="Unknown reward 'nope'.*keyword:WORD.*module:function"):
        get_reward("nope", tok)
    with pytest.raises(KlvizError, match="no callable 'missing'"):
        get_reward(f"{__name__}:missing", tok)
    with pytest.raises(KlvizError, match="failed: ValueError: no scores today"):
        get_reward(f"{__name__}:broken_reward", tok)(prompts, responses)
    with pytest.raises(KlvizError, match="returned 1 scores for 2 responses"):
        get_reward(f"{__name__}:short_reward", tok)(prompts, responses)


def _reward_model(tok, path):
    config = tiny_config("gpt2", len(tok), tok)
    config.num_labels = 1
    torch.manual_seed(0)
    return save_model(AutoModelForSequenceClassification.from_config(config), path, tok)


def test_reward_model_folder(tok, tmp_path):
    folder = _reward_model(tok, tmp_path / "rm")
    scores = get_reward(str(folder), tok)(["the food", "the room was"], [" was good", " bad"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    other = make_tokenizer(extra_tokens=("zzz",))
    with pytest.raises(KlvizError, match="different tokenizer from the policy.*vocabulary sizes differ"):
        get_reward(str(folder), other)


@pytest.mark.parametrize("overrides,match", [
    (dict(kl_coef=-1.0), "beta"), (dict(kl_estimator="k4"), "Unknown KL estimator 'k4'"),
    (dict(kl_placement="both"), "Unknown KL placement"), (dict(minibatches=9), "minibatches"),
    (dict(target_kl=0.0), "target_kl"), (dict(steps=0), "steps"), (dict(device="tpu"), "Unknown device"),
])
def test_bad_settings_raise(overrides, match):
    with pytest.raises(KlvizError, match=match):
        small_cfg(**overrides)


def test_trainer_rejects_bad_inputs(sft, tok):
    with pytest.raises(KlvizError, match="Unknown reward"):
        PPOTrainer(sft, tok, PROMPTS, small_cfg(reward="nope"))
    with pytest.raises(KlvizError, match="No prompts"):
        PPOTrainer(sft, tok, [], small_cfg())
    with pytest.raises(KlvizError, match="positions"):
        PPOTrainer(sft, tok, PROMPTS, small_cfg(max_new_tokens=200))


def _cli_args(tmp_path, sft_dir, **over):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    base = dict(sft=str(sft_dir), policy_init=None, reward="keyword:good", steps=2, batch_size=8,
                max_new_tokens=6, ppo_epochs=1, minibatches=2, kl_placement="reward", kl_estimator="k1",
                kl_coef=0.05, target_kl=None, kl_horizon=10000, lr=None, seed=0, device="cpu",
                prompts=str(prompts), out=str(tmp_path / "run"))
    return argparse.Namespace(**{**base, **over})


def test_cli_writes_metrics_and_policy(sft, tok, tmp_path, capsys):
    sft_dir = save_model(sft, tmp_path / "sft", tok)
    capsys.readouterr()  # what saving printed
    assert ppo_run(_cli_args(tmp_path, sft_dir)) == 0
    err = capsys.readouterr().err.splitlines()  # it says what it is doing before the imports and the load
    assert err[0].startswith("klviz ppo: starting") and any(line.startswith(f"sft: folder {sft_dir}") for line in err)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(k in lines[0] for k in METRIC_KEYS + BAND_KEYS)
    assert AutoModelForCausalLM.from_pretrained(str(tmp_path / "run" / "policy"), local_files_only=True)
    argv = ["ppo", "--sft", str(sft_dir), "--steps", "1", "--out", str(tmp_path / "x"),
            "--prompts", str(tmp_path / "prompts.txt"), "--reward"]
    assert cli_main(argv + ["sentiment", "--kl-coef", "-1"]) == 2
    assert cli_main(argv + ["sentiment", "--kl-estimator", "k9"]) == 2
    assert cli_main(argv + ["nope"]) == 2
    assert cli_main(argv + ["sentiment", "--save-every", "0"]) == 2
    assert not (tmp_path / "x").exists()


def test_cli_saves_a_checkpoint_series_that_trajectory_reads(sft, tok, tmp_path):
    """--save-every 2 on 5 steps: checkpoint-2 and checkpoint-4 (the trainer's names), each the policy after
    that step: the one saved after the last step equals policy/ weight for weight."""
    from klviz.trajectory import find_checkpoints

    sft_dir = save_model(sft, tmp_path / "sft", tok)
    assert ppo_run(_cli_args(tmp_path, sft_dir, steps=4, save_every=2)) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2", "checkpoint-4", "metrics.jsonl", "policy"]
    assert [(c.name, c.step) for c in find_checkpoints([str(run)])] == [("checkpoint-2", 2), ("checkpoint-4", 4)]
    last, final = (AutoModelForCausalLM.from_pretrained(str(run / d), local_files_only=True).state_dict()
                   for d in ("checkpoint-4", "policy"))
    two = AutoModelForCausalLM.from_pretrained(str(run / "checkpoint-2"), local_files_only=True).state_dict()
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert any(not torch.equal(two[k], final[k]) for k in final)  # step 2's policy, not the last one
