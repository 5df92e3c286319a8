"""PPO defaults for a model of any size (issue 16): the scaled learning rate and the run-time estimate."""

import pytest
import torch

from klviz.ppo.config import BASE_LR, PPOConfig, default_lr, full_trainable_params
from klviz.ppo.estimate import estimate_run, forward_equivalents, probe_seconds_per_token
from klviz.ppo.trainer import PPOTrainer
from tests.helpers.tiny import make_tiny_model, make_tokenizer


def test_a_bigger_model_gets_a_smaller_learning_rate():
    assert default_lr(900_000) == BASE_LR  # the sample models keep the rate they were tuned with
    rates = [default_lr(n) for n in (10**6, 10**7, 135 * 10**6, 10**9)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert default_lr(135 * 10**6) == pytest.approx(BASE_LR / 135)


def test_the_trainable_count_is_what_the_trainer_scales_by():
    model = make_tiny_model("gpt2", n_embd=256, n_layer=2)  # > 1M parameters: the scaling bites
    n = full_trainable_params(model)
    assert n > 10**6 and default_lr(n) < BASE_LR
    trainer = PPOTrainer(model, make_tokenizer(), ["the food was"], PPOConfig(batch_size=2, minibatches=1,
                                                                             device="cpu", lr=None))
    assert trainer.lr == default_lr(n)


def test_the_estimate_scales_with_steps_batch_tokens_and_epochs():
    base = estimate_run(1e-3, steps=10, batch_size=8, prompt_tokens=6, max_new_tokens=16, ppo_epochs=4)
    assert base.total_s == pytest.approx(10 * base.step_s)
    assert base.step_s == pytest.approx(1e-3 * 8 * (6 + 16) * forward_equivalents(4))  # STEP_OVERHEAD 1
    assert estimate_run(1e-3, 20, 8, 6, 16, 4).total_s == pytest.approx(2 * base.total_s)
    assert estimate_run(1e-3, 10, 16, 6, 16, 4).step_s == pytest.approx(2 * base.step_s)
    assert estimate_run(1e-3, 10, 8, 6, 32, 4).step_s > base.step_s
    assert estimate_run(1e-3, 10, 8, 6, 16, 1).step_s < base.step_s
    assert base.describe() == f"Estimated run time: about {base.total_s:.0f} s ({base.step_s:.2g} s/step)"
    assert estimate_run(1.0, 100, 8, 6, 16, 4).describe() == "Estimated run time: about 73.3 h (2640 s/step)"  # 8 x 22 x 15 s


def test_the_probe_times_a_forward_pass_of_the_model():
    small, big = make_tiny_model("gpt2"), make_tiny_model("gpt2", n_embd=512, n_layer=4)
    torch.set_num_threads(1)
    assert 0 < probe_seconds_per_token(small) < probe_seconds_per_token(big)
    seen = []
    real_forward = small.forward
    small.forward = lambda *a, **k: seen.append(torch.get_num_threads()) or real_forward(*a, **k)
    probe_seconds_per_token(small, threads=2)  # on the threads asked for, then the caller's setting again
    assert seen == [2, 2, 2] and torch.get_num_threads() == 1
