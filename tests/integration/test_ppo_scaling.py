"""PPO beyond the sample models: the default learning rate by model size, the approx-KL watch, and a
policy trained from a GGUF that saves (checked before training)."""

import pytest
import torch

from klviz.errors import KlvizError
from klviz.ppo.config import BASE_LR, LR_REFERENCE_PARAMS, MIN_DEFAULT_LR, PPOConfig, default_lr
from klviz.ppo.trainer import PPOTrainer
from klviz.threads import torch_threads
from tests.helpers.tiny import make_tiny_model, make_tokenizer, write_gguf_llama

PROMPTS = ["the food was", "the room and", "staff"]
SMALL_RUN = dict(reward="length", steps=1, batch_size=4, max_new_tokens=3, ppo_epochs=1, minibatches=1,
                 device="cpu", bands_every=0)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


def test_default_lr_is_the_sample_models_rate_up_to_1m_parameters_then_scaled_down():
    assert default_lr(896_000) == BASE_LR and default_lr(LR_REFERENCE_PARAMS) == BASE_LR
    assert default_lr(135_000_000) == pytest.approx(BASE_LR / 135)  # SmolLM2-135M: 2.2e-6, not 3e-4
    assert default_lr(10**12) == MIN_DEFAULT_LR


def test_trainer_uses_the_scaled_default_unless_a_rate_is_given(tok):
    sft = make_tiny_model("gpt2", len(tok), seed=0)
    trainer = PPOTrainer(sft, tok, PROMPTS, PPOConfig(**SMALL_RUN))
    n = sum(p.numel() for p in trainer.policy.parameters()) + sum(p.numel() for p in trainer.value_head.parameters())
    assert trainer.lr == default_lr(n) and trainer.optimizer.param_groups[0]["lr"] == trainer.lr
    given = PPOTrainer(sft, tok, PROMPTS, PPOConfig(**SMALL_RUN, lr=1e-3))
    assert given.lr == given.optimizer.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_max_approxkl_and_lr_must_be_positive(bad):
    for name in ("lr", "max_approxkl"):
        with pytest.raises(KlvizError, match=name):
            PPOConfig(**{name: bad})


def test_an_update_that_blows_the_policy_up_stops_the_run_with_a_sentence(tok):
    sft = make_tiny_model("gpt2", len(tok), seed=0)
    cfg = PPOConfig(**{**SMALL_RUN, "ppo_epochs": 4, "minibatches": 2}, lr=0.5, cliprange=100.0)
    trainer = PPOTrainer(sft, tok, PROMPTS, cfg)
    with pytest.raises(KlvizError, match=r"PPO step 1 moved the policy too far .*approx-KL .* lower the learning rate"):
        trainer.step()
    unwatched = PPOTrainer(sft, tok, PROMPTS, PPOConfig(**{**SMALL_RUN, "ppo_epochs": 4, "minibatches": 2},
                                                        lr=0.5, cliprange=100.0, max_approxkl=None))
    assert unwatched.step()["approxkl"] > cfg.max_approxkl  # the same run, unwatched, really exploded


def test_a_healthy_step_passes_the_watch(tok):
    trainer = PPOTrainer(make_tiny_model("gpt2", len(tok), seed=0), tok, PROMPTS, PPOConfig(**SMALL_RUN))
    assert trainer.step()["approxkl"] <= trainer.cfg.max_approxkl


def test_a_policy_trained_from_a_gguf_saves(tok, tmp_path):
    """transformers' dequantized GGUF model keeps its quantizer marks; the trainer strips them at start."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM

    path = write_gguf_llama(make_tiny_model("llama", len(tok), seed=0), tok, tmp_path / "sft.gguf")
    raw = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=str(path)).eval()
    trainer = PPOTrainer(raw, tok, PROMPTS, PPOConfig(**SMALL_RUN))
    assert getattr(trainer.policy, "hf_quantizer", None) is None  # before any step
    trainer.step()
    saved = trainer.save(tmp_path / "policy")
    assert (saved / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(str(saved))
    for (name, a), b in zip(trainer.policy.state_dict().items(), reloaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


# ---- LoRA -------------------------------------------------------------------------------------

def test_lora_policy_starts_as_the_reference_and_trains_only_the_adapter(tok):
    pytest.importorskip("peft")
    sft = make_tiny_model("llama", len(tok), seed=0)
    before = {k: v.clone() for k, v in sft.state_dict().items()}
    trainer = PPOTrainer(sft, tok, PROMPTS, PPOConfig(**SMALL_RUN, lora_rank=2, lr=1e-2))
    trained = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    roll = trainer.rollout()
    ref = trainer.ref_logprobs(roll)  # the base with the adapter off
    sel = roll.mask.bool()
    torch.testing.assert_close(ref[sel], roll.logprobs[sel], rtol=1e-5, atol=1e-5)  # B = 0: policy == ref
    metrics = trainer.step()
    assert metrics["kl_reverse"] == pytest.approx(0.0, abs=1e-5)  # sampled before the first update
    for k, v in sft.state_dict().items():  # the caller's SFT model is untouched (share_sft=False)
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    roll = trainer.rollout()
    ref_after = trainer.ref_logprobs(roll)
    with torch.no_grad():  # the reference is still the SFT model: adapter off means base weights
        from klviz.ppo.rollout import response_forward
        logits, _ = response_forward(sft, roll.query, roll.query_mask, roll.response)
    sel = roll.mask.bool()
    torch.testing.assert_close(ref_after[sel], torch.log_softmax(logits.float(), -1)[sel], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref_after[sel], roll.logprobs[sel], atol=1e-4)  # and the policy moved


def test_lora_run_saves_a_plain_merged_policy(tok, tmp_path):
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    trainer = PPOTrainer(make_tiny_model("llama", len(tok), seed=0), tok, PROMPTS,
                         PPOConfig(**SMALL_RUN, lora_rank=2, lr=1e-2), share_sft=True)
    trainer.step()
    saved = AutoModelForCausalLM.from_pretrained(str(trainer.save(tmp_path / "policy")))
    assert not any("lora_" in k for k in saved.state_dict())
    roll = trainer.rollout()
    with torch.no_grad():
        from klviz.ppo.rollout import response_forward
        want, _ = response_forward(trainer.policy, roll.query, roll.query_mask, roll.response)
        got, _ = response_forward(saved, roll.query, roll.query_mask, roll.response)
    sel = roll.mask.bool()
    torch.testing.assert_close(got[sel], want[sel], rtol=1e-4, atol=1e-4)


def test_lora_cannot_start_from_a_policy_init(tok):
    sft = make_tiny_model("llama", len(tok), seed=0)
    with pytest.raises(KlvizError, match="cannot start from a policy-init"):
        PPOTrainer(sft, tok, PROMPTS, PPOConfig(**SMALL_RUN, lora_rank=2), policy_init=sft)


# ---- the CLI ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lora", [0, 2])
def test_klviz_ppo_from_a_gguf_trains_and_saves(tok, tmp_path, monkeypatch, capsys, lora):
    """The issue's run that lost 24 minutes: `klviz ppo --sft <a .gguf>` failed at the save."""
    pytest.importorskip("gguf")
    from klviz.cli import main as cli_main
    from klviz.models import load_model

    monkeypatch.setenv("KLVIZ_CACHE_DIR", str(tmp_path / "cache"))
    gguf = write_gguf_llama(make_tiny_model("llama", len(tok), seed=0), tok, tmp_path / "sft.gguf")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    code = cli_main(["ppo", "--sft", str(gguf), "--reward", "length", "--steps", "1", "--batch-size", "4",
                     "--max-new-tokens", "3", "--ppo-epochs", "1", "--minibatches", "1", "--device", "cpu",
                     "--prompts", str(prompts), "--lora-rank", str(lora), "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    assert "learning rate" in capsys.readouterr().out  # the scaled default is said
    saved = load_model(tmp_path / "run" / "policy", device="cpu")
    assert saved.info.kind == "folder" and not any("lora_" in k for k in saved.model.state_dict())


def test_after_the_watched_steps_a_blown_up_update_ends_its_epochs_instead_of_the_run(tok):
    """Past approxkl_watch_steps the same explosion ends the update early (cleanrl's target_kl): fewer
    minibatch steps than ppo_epochs x minibatches, and the run goes on; a NaN would still stop it."""
    sft = make_tiny_model("gpt2", len(tok), seed=0)
    cfg = PPOConfig(**{**SMALL_RUN, "ppo_epochs": 4, "minibatches": 2}, lr=0.5, cliprange=100.0, approxkl_watch_steps=1)
    trainer = PPOTrainer(sft, tok, PROMPTS, cfg)
    trainer.step_count = cfg.approxkl_watch_steps  # the next step is the first one past the watch
    steps = []
    real_step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (steps.append(1), real_step(*a, **k))[1]
    metrics = trainer.step()
    assert metrics["approxkl"] > cfg.max_approxkl and 0 < len(steps) < cfg.ppo_epochs * cfg.minibatches
    with pytest.raises(KlvizError, match="approx-KL nan"):
        trainer._watch_approxkl(float("nan"))
