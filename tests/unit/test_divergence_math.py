"""token_stats and kl_exact against a float64 brute force, plus the invariants of the definitions."""

import numpy as np
import pytest
import torch

from klviz.engine.columns import BAND_EDGES, N_BANDS

from klviz.engine.divergence import kl_exact, token_stats_torch
from klviz.engine.fused_cpu import HAVE_NUMBA, fused_token_stats

def _fused(logp, logq, ids, top_k=10):
    return fused_token_stats(logp, logq, ids, top_k, BAND_EDGES)


# Both implementations: the fused CPU sweep and the vectorised torch path (GPUs).
IMPLS = [pytest.param(token_stats_torch, id="torch"),
         pytest.param(_fused, id="fused", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing"))]
from tests.helpers.brute import brute_row, assert_row_close


def _random_logits(n, V, seed, spread=4.0):
    g = torch.Generator().manual_seed(seed)
    pol = torch.randn(n, V, generator=g) * spread
    # The SFT logits are the policy's plus noise, so the two are close in places and far in others.
    sft = pol + torch.randn(n, V, generator=g) * spread / 2
    return pol, sft


@pytest.mark.parametrize("V,seed,spread", [(7, 0, 1.0), (50, 1, 4.0), (300, 2, 8.0), (1000, 3, 12.0)])
@pytest.mark.parametrize("token_stats", IMPLS)
def test_every_column_matches_float64_brute_force(token_stats, V, seed, spread):
    pol, sft = _random_logits(5, V, seed, spread)
    y = torch.randint(0, V, (5,), generator=torch.Generator().manual_seed(seed))
    stats = token_stats(torch.log_softmax(pol, -1), torch.log_softmax(sft, -1), y, top_k=4)
    for i in range(5):
        got = {k: v[i].numpy() for k, v in stats.items()}
        assert_row_close(got, brute_row(pol[i].tolist(), sft[i].tolist(), int(y[i]), top_k=4))


@pytest.mark.parametrize("token_stats", IMPLS)
def test_wide_spread_fills_every_band(token_stats):
    # Spread enough that q covers the bands from <1e-6 up to >= 0.1.
    pol, sft = _random_logits(3, 2000, 7, spread=6.0)
    y = torch.zeros(3, dtype=torch.long)
    stats = token_stats(torch.log_softmax(pol, -1), torch.log_softmax(sft, -1), y, top_k=10)
    q = torch.softmax(sft, -1)
    for b in range(N_BANDS):
        in_band = ((q >= BAND_EDGES[b]) & (q < BAND_EDGES[b + 1])).any()
        assert in_band, f"test setup: band {b} is empty"
    for i in range(3):
        assert_row_close({k: v[i].numpy() for k, v in stats.items()},
                         brute_row(pol[i].tolist(), sft[i].tolist(), 0, top_k=10))


@pytest.mark.parametrize("token_stats", IMPLS)
def test_invariants(token_stats):
    pol, sft = _random_logits(16, 500, 11)
    logp, logq = torch.log_softmax(pol, -1), torch.log_softmax(sft, -1)
    y = torch.randint(0, 500, (16,))
    s = token_stats(logp, logq, y)
    assert (s["kl_reverse"] >= 0).all() and (s["kl_forward"] >= 0).all()
    gained, lost = s["mass_gained_by_sft_bin"].sum(1), s["mass_lost_by_sft_bin"].sum(1)
    torch.testing.assert_close(gained, s["tv"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(lost, s["tv"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s["kl_reverse_by_sft_bin"].sum(1), s["kl_reverse"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s["kl_forward_by_sft_bin"].sum(1), s["kl_forward"], rtol=1e-5, atol=1e-6)
    assert (s["k2"] >= 0).all() and (s["k3"] >= 0).all()  # k1 may be negative; k2, k3 never
    assert (s["rank_sft"] >= 1).all() and (s["rank_sft"] <= 500).all()


@pytest.mark.parametrize("token_stats", IMPLS)
def test_identical_distributions_have_zero_divergence(token_stats):
    pol, _ = _random_logits(4, 100, 3)
    logp = torch.log_softmax(pol, -1)
    s = token_stats(logp, logp.clone(), torch.arange(4))
    for name in ("kl_reverse", "kl_forward", "tv", "k1", "k2", "k3"):
        assert torch.all(s[name] == 0), name
    assert torch.equal(s["rank_sft"], s["rank_policy"])


def test_kl_exact_agrees_with_token_stats_and_is_differentiable():
    pol, sft = _random_logits(6, 80, 5)
    pol.requires_grad_(True)
    logp, logq = torch.log_softmax(pol, -1), torch.log_softmax(sft, -1)
    rev, fwd = kl_exact(logp, logq)
    s = token_stats_torch(logp.detach(), logq, torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(rev.detach(), s["kl_reverse"])
    torch.testing.assert_close(fwd.detach(), s["kl_forward"])
    # d/dz KL(p || q) = p * (log p/q - KL), a closed form to check autograd through kl_exact against.
    (grad,) = torch.autograd.grad(rev.sum(), pol)
    p = logp.detach().exp()
    want = p * ((logp.detach() - logq) - rev.detach()[:, None])
    torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("token_stats", IMPLS)
def test_zero_probability_entries_contribute_nothing(token_stats):
    # A policy that puts exactly zero mass somewhere (logit -inf) still has a finite reverse KL.
    pol = torch.tensor([[0.0, 1.0, -float("inf")]])
    sft = torch.tensor([[0.0, 0.0, 0.0]])
    s = token_stats(torch.log_softmax(pol, -1), torch.log_softmax(sft, -1), torch.tensor([0]))
    want = brute_row([0.0, 1.0, -1e300], [0.0, 0.0, 0.0], 0, top_k=3)
    np.testing.assert_allclose(s["kl_reverse"].item(), want["kl_reverse"], rtol=1e-6)
    assert torch.isinf(s["kl_forward"]).all()  # q > 0 where p = 0: KL(SFT || policy) is infinite


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")
def test_fused_path_leaves_torch_thread_count_alone():
    # numba's OpenMP layer resets the team size torch reads; a PPO job limited to 1 thread must stay so.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        logp = torch.log_softmax(torch.randn(4, 50), -1)
        _fused(logp, logp, torch.zeros(4, dtype=torch.long))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")
@pytest.mark.parametrize("V,k", [(5000, 4), (32000, 10), (1000, 10)])
def test_fused_top_k_screen_on_wide_vocabularies(V, k):
    # Wide enough that the block screen skips blocks (V / 256 > k), except the last case (it walks all).
    pol, sft = _random_logits(3, V, V, spread=3.0)
    y = torch.tensor([0, V // 2, V - 1])
    stats = _fused(pol, sft, y, top_k=k)  # raw logits: the fused sweep normalises them itself
    for i in range(3):
        assert_row_close({n: v[i].numpy() for n, v in stats.items()},
                         brute_row(pol[i].tolist(), sft[i].tolist(), int(y[i]), top_k=k))


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")
def test_fused_top_k_ties_go_to_the_earliest_ids():
    # p = q except on 3 entries spread over different blocks: every other share is exactly 0, so the
    # top-8 ends in ties at 0, which (like a stable sort) go to the earliest vocabulary ids.
    V = 4096
    sft = torch.zeros(1, V)
    pol = sft.clone()
    pol[0, [300, 1900, 4000]] = torch.tensor([2.0, 1.0, -3.0])
    stats = _fused(pol, sft, torch.tensor([5]), top_k=8)
    want = brute_row(pol[0].tolist(), sft[0].tolist(), 5, top_k=8)
    got = {n: v[0].numpy() for n, v in stats.items()}
    assert_row_close(got, want)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")
def test_fused_exp_against_numpy():
    import numba

    from klviz.engine.fused_cpu import _FASTMATH, _exp

    @numba.njit(fastmath=_FASTMATH)  # as in the kernels: numba compiles _exp with its caller's flags
    def apply(xs, out):
        for i in range(xs.shape[0]):
            out[i] = _exp(xs[i])

    xs = np.concatenate([-np.logspace(-12, np.log10(707.9), 20001), [0.0, -0.0, 1e-300, 0.5, -708.0]])
    out = np.empty_like(xs)
    apply(xs, out)
    near = xs >= -104  # where float32 logits put log-probabilities that matter: ~1e-15
    np.testing.assert_allclose(out[near], np.exp(xs[near]), rtol=1e-14, atol=0)
    np.testing.assert_allclose(out, np.exp(xs), rtol=5e-14, atol=0)
    tails = np.array([-708.5, -745.0, -1e6, -np.inf])
    out = np.empty_like(tails)
    apply(tails, out)
    assert (out == 0).all()  # below float64's normal range (< 3.3e-308) and at -inf: exactly 0


@pytest.mark.parametrize("token_stats", IMPLS)
def test_first_order_entropy_change_agrees_to_first_order(token_stats):
    """Cui et al. 2025: for policy logits = SFT logits + eps * d, the exact H(policy) - H(SFT) and
    -Cov_q(log q, log p - log q) differ by O(eps^2): halving eps quarters the gap, and the gap is a
    small part of the change."""
    g = torch.Generator().manual_seed(4)
    sft = torch.randn(6, 200, generator=g, dtype=torch.float64) * 2
    d = torch.randn(6, 200, generator=g, dtype=torch.float64)
    y, logq = torch.zeros(6, dtype=torch.long), torch.log_softmax(sft, -1)
    gaps, changes = [], []
    for eps in (0.04, 0.02, 0.01):
        s = token_stats(torch.log_softmax(sft + eps * d, -1), logq, y)
        exact = (s["entropy_policy"] - s["entropy_sft"]).numpy()
        gaps.append(np.abs(exact - s["entropy_change_first_order"].numpy()))
        changes.append(np.abs(exact))
    for a, b in zip(gaps, gaps[1:]):
        np.testing.assert_allclose(a / b, 4.0, rtol=0.25)  # O(eps^2)
    assert gaps[-1].sum() < 0.05 * changes[-1].sum()
