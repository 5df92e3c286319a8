"""The mini PPO's math, exactly: a categorical bandit enumerated over all actions, and hand computations.

Every expectation here is a sum over the whole action set weighted by pi (no sampling), in float64,
through the very functions PPOTrainer calls (klviz.ppo.losses), so the claims about KL estimators
hold for the trainer, not for a re-implementation.
"""

import math
import statistics

import pytest
import torch

from klviz.errors import KlvizError
from klviz.ppo.losses import (AdaptiveKLController, gae, kl_estimate, masked_mean, policy_loss_terms,
                              token_rewards, value_loss, whiten)

K = 6  # actions of the bandit
BETA = 0.7


def _bandit(seed=0):
    """Policy logits theta (trainable) and fixed reference logits, float64."""
    g = torch.Generator().manual_seed(seed)
    theta = (torch.randn(K, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    ref_logits = torch.randn(K, generator=g, dtype=torch.float64) * 1.5
    return theta, ref_logits


def _exact_kl_grads(theta, ref_logits):
    """grad_theta KL(pi || ref) and grad_theta KL(ref || pi), by autograd on the exact sums."""
    logpi, logref = torch.log_softmax(theta, -1), torch.log_softmax(ref_logits, -1)
    kl_reverse = (logpi.exp() * (logpi - logref)).sum()
    kl_forward = (logref.exp() * (logref - logpi)).sum()
    g_rev, = torch.autograd.grad(kl_reverse, theta, retain_graph=True)
    g_fwd, = torch.autograd.grad(kl_forward, theta)
    return g_rev, g_fwd


def _enumerate(theta, ref_logits):
    """Every action once, as a batch of K one-token responses: logp, ref_logp [K, 1], rows [K, 1, K]."""
    logpi = torch.log_softmax(theta, -1)
    logref = torch.log_softmax(ref_logits, -1)
    actions = torch.arange(K)[:, None]  # (K, 1): response b is action b
    logp = logpi[actions]  # (K, 1) differentiable in theta
    ref_logp = logref[actions]
    rows, ref_rows = logpi.expand(K, 1, K), logref.expand(K, 1, K)
    weights = logpi.exp().detach()  # pi(a): the expectation's weights (not differentiated)
    return logp, ref_logp, rows, ref_rows, weights


def _expected_loss_grad(theta, per_token, weights):
    """grad_theta of E_{a ~ pi}[loss(a)] with pi held fixed in the weights (what sampling estimates)."""
    expected = (weights * per_token[:, 0]).sum()
    return torch.autograd.grad(expected, theta)[0]


def _grad_kl_as_loss(name, seed=0):
    theta, ref_logits = _bandit(seed)
    logp, ref_logp, rows, ref_rows, w = _enumerate(theta, ref_logits)
    mask = torch.ones(K, 1, dtype=torch.float64)
    kl = kl_estimate(logp, ref_logp, name, logprobs=rows, ref_logprobs=ref_rows)
    pol = policy_loss_terms(logp, logp.detach(), torch.zeros_like(logp), mask, 0.2, kl, BETA)
    return _expected_loss_grad(theta, pol.per_token, w), _exact_kl_grads(theta, ref_logits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k1_in_reward_gives_grad_of_reverse_kl(seed):
    # InstructGPT: r_t = -beta * k1, REINFORCE through the clipped objective at ratio 1.
    theta, ref_logits = _bandit(seed)
    logp, ref_logp, rows, ref_rows, w = _enumerate(theta, ref_logits)
    mask = torch.ones(K, 1, dtype=torch.float64)
    penalty = kl_estimate(logp.detach(), ref_logp, "k1")
    rewards = token_rewards(torch.zeros(K, dtype=torch.float64), penalty, mask, BETA)
    advantages, _ = gae(rewards, torch.zeros_like(rewards), mask, gamma=1.0, lam=1.0)
    pol = policy_loss_terms(logp, logp.detach(), advantages, mask, 0.2)
    got = _expected_loss_grad(theta, pol.per_token, w)
    g_rev, g_fwd = _exact_kl_grads(theta, ref_logits)
    torch.testing.assert_close(got, BETA * g_rev, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got, BETA * g_fwd, atol=1e-3)  # and it is not the other direction


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k1_as_loss_has_zero_expected_gradient(seed):
    got, (g_rev, _) = _grad_kl_as_loss("k1", seed)
    torch.testing.assert_close(got, torch.zeros_like(got), rtol=0, atol=1e-12)
    assert g_rev.abs().max() > 1e-2  # the KL itself does have a gradient here


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k2_as_loss_gives_grad_of_reverse_kl(seed):
    got, (g_rev, g_fwd) = _grad_kl_as_loss("k2", seed)
    torch.testing.assert_close(got, BETA * g_rev, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got, BETA * g_fwd, atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k3_as_loss_gives_grad_of_forward_kl(seed):
    got, (g_rev, g_fwd) = _grad_kl_as_loss("k3", seed)
    torch.testing.assert_close(got, BETA * g_fwd, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got, BETA * g_rev, atol=1e-3)


@pytest.mark.parametrize("name,direction", [("exact-reverse", 0), ("exact-forward", 1)])
def test_exact_terms_as_loss_give_their_own_direction(name, direction):
    got, grads = _grad_kl_as_loss(name, seed=3)
    torch.testing.assert_close(got, BETA * grads[direction], rtol=1e-10, atol=1e-12)


def test_estimators_expectations_under_pi():
    # E_pi[k1] = E_pi[k3] = KL(pi || ref) exactly; k2 is only a second-order approximation.
    theta, ref_logits = _bandit(4)
    logp, ref_logp, rows, ref_rows, w = _enumerate(theta.detach(), ref_logits)
    exact = kl_estimate(logp, ref_logp, "exact-reverse", logprobs=rows, ref_logprobs=ref_rows)[0, 0]
    for name in ("k1", "k3"):
        torch.testing.assert_close((w * kl_estimate(logp, ref_logp, name)[:, 0]).sum(), exact)


def test_estimator_values_by_hand():
    logp, ref_logp = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    r = [0.5, -1.0]
    torch.testing.assert_close(kl_estimate(logp, ref_logp, "k1"), torch.tensor(r))
    torch.testing.assert_close(kl_estimate(logp, ref_logp, "k2"), torch.tensor([x * x / 2 for x in r]))
    torch.testing.assert_close(kl_estimate(logp, ref_logp, "k3"), torch.tensor([math.exp(-x) - 1 + x for x in r]))
    with pytest.raises(KlvizError, match="Unknown KL estimator 'k4'"):
        kl_estimate(logp, ref_logp, "k4")


def _gae_loop(rewards, values, mask, gamma, lam):
    """The textbook backward recursion, one response at a time, in Python floats."""
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        n = int(sum(mask[b]))  # response length
        last = 0.0
        for t in reversed(range(n)):
            next_value = values[b][t + 1] if t + 1 < n else 0.0
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            last = delta + gamma * lam * last
            adv[b][t] = last
    ret = [[adv[b][t] + (values[b][t] if mask[b][t] else 0.0) for t in range(T)] for b in range(B)]
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_python_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    B, T = 5, 9
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = [9, 1, 4, 7, 2]
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths], dtype=torch.float64)
    adv, ret = gae(rewards, values, mask, gamma, lam)
    want_adv, want_ret = _gae_loop(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(want_adv, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, torch.tensor(want_ret, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_token_rewards_by_hand():
    scores = torch.tensor([1.0, 2.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    want = torch.tensor([[-0.05, -0.1 + 1.0, 0.0], [-0.2, -0.25, -0.3 + 2.0]])
    torch.testing.assert_close(token_rewards(scores, kl, mask, 0.5), want)
    torch.testing.assert_close(token_rewards(scores, None, mask, 0.5),
                               torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]))


def test_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 99.0], [4.0, 7.0, 11.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    kept = [1.0, 2.0, 4.0, 7.0, 11.0]
    mean, sd = statistics.mean(kept), statistics.stdev(kept)  # stdev: Bessel-corrected
    want = torch.tensor([[(1 - mean) / sd, (2 - mean) / sd, 0.0],
                         [(4 - mean) / sd, (7 - mean) / sd, (11 - mean) / sd]])
    torch.testing.assert_close(whiten(x, mask), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor(mean))


def test_clipped_policy_loss_by_hand():
    # Four tokens, one per case of the clip (ratio 1.5 / 0.5 against advantage +1 / -1), and padding.
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5, 3.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])  # the last token is padding
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -1.0]])
    out = policy_loss_terms(old + ratio.log(), old, adv, mask, cliprange=0.2)
    # max(-A r, -A clip(r)): -1.2 (clipped), -0.5, 0.8 (clipped), 1.5
    torch.testing.assert_close(out.loss, torch.tensor((-1.2 - 0.5 + 0.8 + 1.5) / 4))
    torch.testing.assert_close(out.clipfrac, torch.tensor(0.5))
    want_approxkl = sum(r - 1 - math.log(r) for r in (1.5, 0.5, 0.5, 1.5)) / 4
    torch.testing.assert_close(out.approxkl, torch.tensor(want_approxkl))
    torch.testing.assert_close(out.kl_loss, torch.tensor(0.0))
    kl = torch.tensor([[0.2, 0.4, 0.6, 0.8, 100.0]])
    with_kl = policy_loss_terms(old + ratio.log(), old, adv, mask, 0.2, kl, kl_coef=0.5)
    torch.testing.assert_close(with_kl.kl_loss, torch.tensor(0.5 * (0.2 + 0.4 + 0.6 + 0.8) / 4))
    torch.testing.assert_close(with_kl.loss, out.loss + with_kl.kl_loss)


def test_clipped_value_loss_by_hand():
    vpred = torch.tensor([[1.0, 0.0, 0.5]])
    old = torch.tensor([[0.5, 0.1, 0.4]])
    returns = torch.tensor([[0.0, 1.0, 0.45]])
    mask = torch.ones(1, 3)
    # token 0: V moved +0.5, clipped to 0.7: max((1-0)^2, (0.7-0)^2) = 1
    # token 1: V moved -0.1 (inside the clip): (0-1)^2 = 1
    # token 2: V moved +0.1 (inside the clip): (0.5-0.45)^2 = 0.0025
    loss, clipfrac = value_loss(vpred, old, returns, mask, cliprange_value=0.2)
    torch.testing.assert_close(loss, torch.tensor(0.5 * (1.0 + 1.0 + 0.0025) / 3))
    assert float(clipfrac) == 0.0
    # V moved -0.5 toward the return -1, clipped to 0.3: the clipped branch is worse and wins.
    loss2, clipfrac2 = value_loss(torch.tensor([[0.0]]), torch.tensor([[0.5]]), torch.tensor([[-1.0]]),
                                  torch.ones(1, 1), 0.2)
    torch.testing.assert_close(loss2, torch.tensor(0.5 * (0.3 + 1.0) ** 2))
    assert float(clipfrac2) == 1.0


def test_adaptive_controller_by_hand():
    # Ziegler et al. 2019: e = clip(KL/target - 1, -0.2, 0.2); beta *= 1 + e * n / horizon.
    ctl = AdaptiveKLController(value=0.1, target=6.0, horizon=10000)
    assert ctl.update(6.6, 64) == pytest.approx(0.1 * (1 + 0.1 * 64 / 10000))
    before = ctl.value
    assert ctl.update(100.0, 64) == pytest.approx(before * (1 + 0.2 * 64 / 10000))  # clipped at +0.2
    before = ctl.value
    assert ctl.update(0.0, 64) == pytest.approx(before * (1 - 0.2 * 64 / 10000))  # clipped at -0.2
    before = ctl.value
    assert ctl.update(6.0, 64) == pytest.approx(before)  # on target: unchanged


def test_sample_categorical_draws_the_distribution():
    from klviz.ppo.rollout import sample_categorical

    probs = torch.tensor([0.5, 0.0, 0.3, 0.2])
    logprobs = probs.log().expand(20_000, 4)  # log 0 = -inf: that token must never be drawn
    draws = torch.cat([sample_categorical(logprobs, torch.Generator().manual_seed(s)) for s in range(10)])
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    # 200k draws: the standard error of each frequency is below 0.0012, so 0.005 is > 4 sigma.
    torch.testing.assert_close(freq, probs.double(), rtol=0, atol=5e-3)
    assert int(freq[1] * draws.numel()) == 0
    again = sample_categorical(logprobs, torch.Generator().manual_seed(0))
    assert torch.equal(again, sample_categorical(logprobs, torch.Generator().manual_seed(0)))
