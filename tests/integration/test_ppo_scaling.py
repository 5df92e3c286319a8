"""PPO beyond the sample models: the default learning rate by model size, the approx-KL watch, and a
policy trained from a GGUF that saves (checked before training)."""

import pytest
import torch

from klviz.errors import KlvizError
from klviz.ppo.config import BASE_LR, LR_REFERENCE_PARAMS, MIN_DEFAULT_LR, PPOConfig, default_lr
from klviz.ppo.trainer import PPOTrainer
from tests.helpers.tiny import make_tiny_model, make_tokenizer, write_gguf_llama

PROMPTS = ["the food was", "the room and", "staff"]
SMALL_RUN = dict(reward="length", steps=1, batch_size=4, max_new_tokens=3, ppo_epochs=1, minibatches=1,
                 device="cpu", bands_every=0)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
