"""klviz.lab.toy against float64 brute force: autograd over an explicit enumeration of the actions, numerical
integration for Schulman's Gaussian table, and an optimiser for the KL-regularized optima.

KL(pi||ref) = sum pi log(pi/ref) is the reverse KL, KL(ref||pi) = sum ref log(ref/pi) the forward KL.
"""

import math

import numpy as np
import pytest
import torch

from klviz.lab import toy
from klviz.errors import KlvizError

BETA = 0.3
RTOL = 1e-10  # float64 sums over <= 8 actions agree to ~1e-15; 1e-10 leaves room, an error is O(1)
Z = 5.0  # standard errors allowed between a fixed-seed sample statistic and its exact value


def _pairs():
    """(policy logits, ref logits) over several K, fixed seed, from flat to peaked."""
    rng = np.random.default_rng(1234)
    return [(rng.normal(size=k) * s, rng.normal(size=k) * s) for k in (2, 3, 5, 8) for s in (0.3, 1.0, 3.0)]


PAIRS = _pairs()


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def _autograd(fn, theta):
    """Gradient of fn(theta) w.r.t. the policy logits theta, shape (K,)."""
    theta = _t(theta).requires_grad_(True)
    fn(theta).backward()
    return theta.grad.numpy()


def _kl_reverse_bf(theta, ref_logits):
    logp, logq = torch.log_softmax(theta, -1), torch.log_softmax(_t(ref_logits), -1)
    return sum(logp[a].exp() * (logp[a] - logq[a]) for a in range(theta.numel()))  # explicit sum over a


def _kl_forward_bf(theta, ref_logits):
    logp, logq = torch.log_softmax(theta, -1), torch.log_softmax(_t(ref_logits), -1)
    return sum(logq[a].exp() * (logq[a] - logp[a]) for a in range(theta.numel()))


def _k_torch(name, lr):
    return {"k1": lr, "k2": lr**2 / 2, "k3": torch.exp(-lr) - 1 + lr}[name]


@pytest.mark.parametrize("pl, rl", PAIRS)
def test_kls_against_enumeration_and_invariants(pl, rl):
    pi, ref = toy.softmax(pl), toy.softmax(rl)
    assert toy.kl_reverse(pi, ref) == pytest.approx(_kl_reverse_bf(_t(pl), rl).item(), rel=RTOL)
    assert toy.kl_forward(pi, ref) == pytest.approx(_kl_forward_bf(_t(pl), rl).item(), rel=RTOL)
    rev, fwd = toy.kl_contributions(pi, ref)
    assert rev.sum() == pytest.approx(toy.kl_reverse(pi, ref), rel=RTOL)
    assert fwd.sum() == pytest.approx(toy.kl_forward(pi, ref), rel=RTOL)
    assert toy.kl_reverse(pi, ref) > 0 and toy.kl_forward(pi, ref) > 0
    assert toy.kl_reverse(pi, pi) == 0.0 and toy.kl_forward(ref, ref) == 0.0


@pytest.mark.parametrize("pl, rl", PAIRS)
def test_kl_gradients_against_autograd(pl, rl):
    pi, ref = toy.softmax(pl), toy.softmax(rl)
    np.testing.assert_allclose(toy.grad_kl_reverse(pi, ref), _autograd(lambda t: _kl_reverse_bf(t, rl), pl),
                               rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(toy.grad_kl_forward(pi, ref), _autograd(lambda t: _kl_forward_bf(t, rl), pl),
                               rtol=RTOL, atol=1e-14)


def _reward_surrogate(name, theta, ref_logits):
    """REINFORCE surrogate sum_a pi(a)[detached] * (-beta k(a))[detached] * log pi(a; theta)."""
    logp, logq = torch.log_softmax(theta, -1), torch.log_softmax(_t(ref_logits), -1)
    k = _k_torch(name, logp - logq).detach()
    return sum(logp[a].exp().detach() * (-BETA * k[a]) * logp[a] for a in range(theta.numel()))


def _loss_surrogate(name, theta, ref_logits):
    """sum_a pi(a)[detached] * k(a; theta): samples held fixed, gradient through log pi inside k."""
    logp, logq = torch.log_softmax(theta, -1), torch.log_softmax(_t(ref_logits), -1)
    k = _k_torch(name, logp - logq)
    return sum(logp[a].exp().detach() * k[a] for a in range(theta.numel()))


@pytest.mark.parametrize("name", toy.ESTIMATORS)
@pytest.mark.parametrize("pl, rl", PAIRS)
def test_placement_gradients_against_autograd(name, pl, rl):
    pi, ref = toy.softmax(pl), toy.softmax(rl)
    np.testing.assert_allclose(toy.reward_placement_grad(pi, ref, name, BETA),
                               _autograd(lambda t: _reward_surrogate(name, t, rl), pl), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(toy.loss_placement_grad(pi, ref, name),
                               _autograd(lambda t: _loss_surrogate(name, t, rl), pl), rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("pl, rl", PAIRS)
def test_expected_gradient_identities(pl, rl):
    pi, ref = toy.softmax(pl), toy.softmax(rl)
    g_rev = _autograd(lambda t: _kl_reverse_bf(t, rl), pl)
    g_fwd = _autograd(lambda t: _kl_forward_bf(t, rl), pl)
    np.testing.assert_allclose(toy.reward_placement_grad(pi, ref, "k1", BETA), -BETA * g_rev, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(toy.loss_placement_grad(pi, ref, "k1"), 0.0, atol=1e-14)
    np.testing.assert_allclose(toy.loss_placement_grad(pi, ref, "k2"), g_rev, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(toy.loss_placement_grad(pi, ref, "k3"), g_fwd, rtol=RTOL, atol=1e-14)
    # k3 in the reward is not the reverse KL's gradient: it is grad KL(pi||ref) - grad KL(ref||pi)
    k3_reward = -toy.reward_placement_grad(pi, ref, "k3", 1.0)
    np.testing.assert_allclose(k3_reward, g_rev - g_fwd, rtol=1e-9, atol=1e-14)
    assert np.max(np.abs(k3_reward - g_rev)) > 1e-3 * np.max(np.abs(g_rev))


def test_gradient_table_uses_penalty_convention():
    pi, ref = toy.softmax(PAIRS[4][0]), toy.softmax(PAIRS[4][1])
    table = toy.gradient_table(pi, ref)
    assert set(table) == {"k1 in reward", "k2 in reward", "k3 in reward", "k1 as loss", "k2 as loss",
                          "k3 as loss", "grad KL(pi||ref)", "grad KL(ref||pi)"}
    np.testing.assert_allclose(table["k1 in reward"], table["grad KL(pi||ref)"], rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(table["k3 as loss"], table["grad KL(ref||pi)"], rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("pl, rl", PAIRS)
def test_estimator_moments_against_enumeration(pl, rl):
    pi, ref = toy.softmax(pl), toy.softmax(rl)
    moments, kl = toy.estimator_moments(pi, ref), toy.kl_reverse(pi, ref)
    for name in toy.ESTIMATORS:
        values = [_k_torch(name, _t(math.log(pi[a] / ref[a]))).item() for a in range(pi.size)]
        mean = sum(p * v for p, v in zip(pi, values))
        var = sum(p * (v - mean) ** 2 for p, v in zip(pi, values))
        assert moments[name][0] == pytest.approx(mean, rel=RTOL)
        assert moments[name][1] == pytest.approx(var, rel=1e-9)
    assert moments["k1"][0] == pytest.approx(kl, rel=RTOL)  # k1 and k3 are unbiased for KL(pi||ref)
    assert moments["k3"][0] == pytest.approx(kl, rel=RTOL)
    assert moments["k2"][0] == pytest.approx(0.5 * np.sum(pi * np.log(pi / ref) ** 2), rel=RTOL)
    assert abs(moments["k2"][0] - kl) > 1e-6 * kl  # k2 is biased for these pairs


@pytest.mark.parametrize("pl, rl", PAIRS[::3])
def test_sampled_moments_within_standard_errors(pl, rl):
    pi, ref, n = toy.softmax(pl), toy.softmax(rl), 200_000
    sampled = toy.sample_moments(toy.sample_log_ratios(pi, ref, n, np.random.default_rng(7)))
    for name, (mean, var) in toy.estimator_moments(pi, ref).items():
        assert abs(sampled[name][0] - mean) <= Z * math.sqrt(var / n)


def test_running_mean_matches_loop():
    x = np.random.default_rng(3).normal(size=50)
    np.testing.assert_allclose(toy.running_mean(x), [x[: i + 1].mean() for i in range(50)], rtol=1e-12)


@pytest.mark.parametrize("mu", [0.1, 0.5, 1.0, 2.0])
def test_gaussian_moments_against_numerical_integration(mu):
    x = np.linspace(-14.0, 14.0, 400_001)  # N(0,1) tail mass beyond 14 is < 1e-44
    w = np.exp(-x**2 / 2) / math.sqrt(2 * math.pi)
    values = toy.estimator_values(mu**2 / 2 - mu * x)
    for name, (mean, var) in toy.gaussian_moments(mu).items():
        m = np.trapezoid(w * values[name], x)
        v = np.trapezoid(w * (values[name] - m) ** 2, x)
        assert mean == pytest.approx(m, rel=1e-9) and var == pytest.approx(v, rel=1e-9)


# Schulman, "Approximating KL Divergence": (bias/true, std/true) with their printed decimals.
PUBLISHED = {
    0.1: {"k1": ((0, 0), (20, 0)), "k2": ((0.002, 3), (1.42, 2)), "k3": ((0, 0), (1.42, 2))},
    1.0: {"k1": ((0, 0), (2, 0)), "k2": ((0.25, 2), (1.73, 2)), "k3": ((0, 0), (1.7, 1))},
}


def _published_tol(value, decimals):
    """Half a unit of the last printed digit; a printed 0 bias is the exact statement 'unbiased'."""
    return 0.0 if value == 0 else 0.5 * 10.0**-decimals + 1e-12


@pytest.mark.parametrize("mu", [0.1, 1.0])
def test_schulman_table_exact_matches_published(mu):
    exact = toy.relative_errors(toy.gaussian_moments(mu), mu**2 / 2)
    for name, ((bias, bd), (std, sd)) in PUBLISHED[mu].items():
        assert abs(exact[name][0] - bias) <= _published_tol(bias, bd) + 1e-12
        assert abs(exact[name][1] - std) <= _published_tol(std, sd)
    assert exact["k1"][1] == pytest.approx(2 / mu, rel=1e-12)
    assert exact["k2"] == pytest.approx((mu**2 / 4, math.sqrt(2 + mu**2)), rel=1e-12)
    assert exact["k3"][1] == pytest.approx(math.sqrt(math.expm1(mu**2) - mu**2) / (mu**2 / 2), rel=1e-12)


@pytest.mark.parametrize("mu", [0.1, 1.0])
def test_schulman_table_sampled_matches_exact_and_published(mu):
    n, true_kl = 1_000_000, mu**2 / 2
    lr = toy.gaussian_log_ratios(mu, n, np.random.default_rng(2024))
    exact = toy.relative_errors(toy.gaussian_moments(mu), true_kl)
    sampled = toy.relative_errors(toy.sample_moments(lr), true_kl)
    for name, k in toy.estimator_values(lr).items():
        s = k.std(ddof=1)
        se_bias = s / math.sqrt(n) / true_kl
        se_std = math.sqrt((np.mean((k - k.mean()) ** 4) - s**4) / n) / (2 * s) / true_kl  # delta method
        (bias, bd), (std, sd) = PUBLISHED[mu][name]
        assert abs(sampled[name][0] - exact[name][0]) <= Z * se_bias
        assert abs(sampled[name][1] - exact[name][1]) <= Z * se_std
        assert abs(sampled[name][0] - bias) <= _published_tol(bias, bd) + Z * se_bias
        assert abs(sampled[name][1] - std) <= _published_tol(std, sd) + Z * se_std


def test_estimator_table_rows():
    pi, ref = toy.softmax(PAIRS[5][0]), toy.softmax(PAIRS[5][1])
    rows = toy.estimator_table(pi, ref, 1000, seed=0)
    assert [r["case"] for r in rows] == ["Gaussian mu=0.1"] * 3 + ["Gaussian mu=1"] * 3 + ["edited pi vs SFT"] * 3
    assert rows[-1]["true KL"] == pytest.approx(toy.kl_reverse(pi, ref), rel=RTOL)
    assert math.isnan(toy.estimator_table(pi, pi, 10, seed=0)[-1]["std/true (exact)"])


def _objective(theta, ref, reward, beta, direction):
    logp, logq = torch.log_softmax(theta, -1), torch.log(_t(ref))
    kl = (logp.exp() * (logp - logq)).sum() if direction == "reverse" else (logq.exp() * (logq - logp)).sum()
    return (logp.exp() * _t(reward)).sum() - beta * kl


def _argmax_by_lbfgs(ref, reward, beta, direction):
    theta = torch.zeros(ref.size, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=1000, tolerance_grad=1e-13, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -_objective(theta, ref, reward, beta, direction)
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(theta.detach(), -1).numpy()


@pytest.mark.parametrize("beta", [0.2, 0.5, 2.0])
@pytest.mark.parametrize("k", [2, 5])
def test_optimal_policies_against_optimiser(beta, k):
    rng = np.random.default_rng(k)
    ref, reward = toy.softmax(rng.normal(size=k)), rng.normal(size=k)
    rev, fwd = toy.optimal_policy_reverse(ref, reward, beta), toy.optimal_policy_forward(ref, reward, beta)
    for pi, direction in ((rev, "reverse"), (fwd, "forward")):
        assert pi.sum() == pytest.approx(1.0, abs=1e-14)
        grad = _autograd(lambda t: _objective(t, ref, reward, beta, direction), np.log(pi))
        assert np.max(np.abs(grad)) < 1e-12  # stationary in the logits
        np.testing.assert_allclose(pi, _argmax_by_lbfgs(ref, reward, beta, direction), atol=1e-7)
    lam = reward + beta * ref / fwd  # pi = beta ref / (lam - r) with one lam > max r
    assert np.ptp(lam) < 1e-12 * abs(lam[0]) + 1e-12 and lam[0] > reward.max()


def test_bound_ratio_and_worst_case_search():
    old, new = np.log([0.2, 0.3, 0.5]), np.log([0.4, 0.4, 0.2])
    p, q = np.exp(old), np.exp(new)
    expected = np.sum(q * np.log(q / p)) * 0.2 / np.sum(p * np.log(p / q))
    assert toy.bound_ratio(old[None], new[None])[0] == pytest.approx(expected, rel=1e-12)
    found = toy.search_bound_worst_case(np.random.default_rng(0))
    assert found.ratio <= 1.0  # the bound holds (chi^2 plus Pinsker)
    assert found.ratio > 0.49  # and the search reaches the K=2 near-uniform limit ratio -> 1/2
    assert toy.bound_ratio(np.log(found.old)[None], np.log(found.new)[None])[0] == pytest.approx(found.ratio)


def test_highlighted_actions():
    pi, ref = np.array([0.5, 0.1, 0.4]), np.array([0.1, 0.5, 0.4])
    assert toy.highlighted_actions(pi, ref) == (0, 1)  # (SFT low/policy high, SFT high/policy low)
    assert toy.highlighted_actions(ref, ref) is None


@pytest.mark.parametrize("values", [[0.5, -0.1, 0.6], [0.0, 0.0, 0.0], [0.5, None, 0.5], [1.0], ["a", 1]])
def test_bad_distributions_raise_one_sentence(values):
    with pytest.raises(KlvizError) as err:
        toy.as_distribution(values, "probabilities", "policy")
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


def test_distribution_kinds():
    np.testing.assert_allclose(toy.as_distribution([1, 3], "probabilities"), [0.25, 0.75])
    np.testing.assert_allclose(toy.as_distribution([0.0, math.log(3)], "logits"), [0.25, 0.75])
    with pytest.raises(KlvizError):
        toy.as_reward([1.0, float("nan")])
