"""token_stats fused into one pass over the vocabulary per position, for the CPU.

On a CPU each [n, V] pass of the vectorised torch path (exp, products, bucketize, scatter_add,
comparisons, top-k: about twenty of them) costs as much as the output head's matmul, so with a
32k vocabulary they would dominate scoring. Here every column is accumulated in one sweep over
(log p, log q), in float64, rows in parallel. Same definitions, same outputs as
klviz.divergence.token_stats; tests/unit/test_divergence_math.py checks both against a float64
brute force. Compiled once per machine by numba (cached next to this file).
"""

from __future__ import annotations

import math

import numpy as np
import torch

try:  # numba is a dependency, but a missing or broken install only costs speed
    import numba

    HAVE_NUMBA = True
except Exception:  # pragma: no cover - exercised only where numba cannot import
    HAVE_NUMBA = False

N_SCALARS = 7  # kl_reverse, kl_forward, entropy_policy, entropy_sft, tv, logp_y, logq_y


def _insert(vals, ids, k, value, v):
    """Keep vals[:k] sorted descending with their ids; earlier ids win ties (like a stable sort)."""
    if value <= vals[k - 1]:
        return
    j = k - 1
    while j > 0 and vals[j - 1] < value:
        vals[j] = vals[j - 1]
        ids[j] = ids[j - 1]
        j -= 1
    vals[j] = value
    ids[j] = v


def _band(q, edges):
    """Index i with edges[i] <= q < edges[i+1] over the inner edges; q >= last inner edge -> len(edges)."""
    b = 0
    while b < edges.shape[0] and q >= edges[b]:
        b += 1
    return b


def _row(lp_row, lq_row, y, edges, k, scalars, ranks, bands, top_ids, top_vals):
    """One position: every column from log p (lp_row) and log q (lq_row), Float[V] each."""
    V = lp_row.shape[0]
    lpy, lqy = float(lp_row[y]), float(lq_row[y])
    kl_r = kl_f = h_p = h_q = gained_total = 0.0
    rank_q = rank_p = 1
    for g in range(2):
        for j in range(k):
            top_vals[g, j] = -math.inf
            top_ids[g, j] = 0
    for v in range(V):
        lp, lq = float(lp_row[v]), float(lq_row[v])
        p, q = math.exp(lp), math.exp(lq)
        rv = p * (lp - lq) if p > 0.0 else 0.0  # p log(p/q): share of KL(policy || SFT)
        fv = q * (lq - lp) if q > 0.0 else 0.0  # q log(q/p): share of KL(SFT || policy)
        b = _band(q, edges)
        if p > q:
            bands[0, b] += p - q
            gained_total += p - q
        elif q > p:
            bands[1, b] += q - p
        bands[2, b] += rv
        bands[3, b] += fv
        kl_r += rv
        kl_f += fv
        if p > 0.0:
            h_p -= p * lp
        if q > 0.0:
            h_q -= q * lq
        rank_q += lq > lqy
        rank_p += lp > lpy
        _insert(top_vals[0], top_ids[0], k, rv, v)
        _insert(top_vals[1], top_ids[1], k, fv, v)
    lost_total = 0.0
    for b in range(bands.shape[1]):
        lost_total += bands[1, b]
    scalars[0], scalars[1], scalars[2], scalars[3] = kl_r, kl_f, h_p, h_q
    scalars[4] = 0.5 * (gained_total + lost_total)  # 1/2 sum_v |p - q|
    scalars[5], scalars[6] = lpy, lqy
    ranks[0], ranks[1] = rank_q, rank_p


if HAVE_NUMBA:
    _insert = numba.njit(cache=True, inline="always")(_insert)
    _band = numba.njit(cache=True, inline="always")(_band)
    _row = numba.njit(cache=True)(_row)

    @numba.njit(cache=True, parallel=True)
    def _rows(logp, logq, ids, edges, k, scalars, ranks, bands, top_ids, top_vals):
        for i in numba.prange(logp.shape[0]):  # positions in parallel, each a sweep over V
            _row(logp[i], logq[i], ids[i], edges, k, scalars[i], ranks[i], bands[i], top_ids[i], top_vals[i])


def fused_token_stats(logp: torch.Tensor, logq: torch.Tensor, token_ids: torch.Tensor, top_k: int,
                      band_edges) -> dict[str, torch.Tensor]:
    """token_stats in one fused pass. logp, logq: Float[n, V] log-softmax on the CPU; token_ids: Long[n]."""
    lp = logp.detach().contiguous().numpy()
    lq = logq.detach().contiguous().numpy()
    ids = token_ids.detach().to(torch.int64).contiguous().numpy()
    n, V = lp.shape
    k = min(top_k, V)
    n_bands = len(band_edges) - 1
    edges = np.asarray(band_edges[1:-1], dtype=np.float64)
    scalars, ranks = np.zeros((n, N_SCALARS)), np.zeros((n, 2), dtype=np.int64)
    bands = np.zeros((n, 4, n_bands))
    top_ids, top_vals = np.zeros((n, 2, k), dtype=np.int64), np.zeros((n, 2, k))
    torch_threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        _rows(lp, lq, ids, edges, k, scalars, ranks, bands, top_ids, top_vals)
    finally:
        # numba's OpenMP layer resets the thread's OpenMP team size, which torch reads as its own
        # thread count: put back what the caller (e.g. a PPO job limited to 1 thread) had set.
        torch.set_num_threads(torch_threads)
    t = torch.from_numpy
    log_ratio = t(scalars[:, 5] - scalars[:, 6])
    p_of = lambda g: t(np.exp(np.take_along_axis(lp, top_ids[:, g], 1).astype(np.float64)))
    q_of = lambda g: t(np.exp(np.take_along_axis(lq, top_ids[:, g], 1).astype(np.float64)))
    return {
        "logp_policy": t(scalars[:, 5]), "logp_sft": t(scalars[:, 6]), "log_ratio": log_ratio,
        "kl_reverse": t(scalars[:, 0]), "kl_forward": t(scalars[:, 1]),
        "entropy_policy": t(scalars[:, 2]), "entropy_sft": t(scalars[:, 3]), "tv": t(scalars[:, 4]),
        "k1": log_ratio, "k2": 0.5 * log_ratio**2, "k3": torch.expm1(-log_ratio) + log_ratio,
        "rank_sft": t(ranks[:, 0]), "rank_policy": t(ranks[:, 1]),
        "mass_gained_by_sft_bin": t(bands[:, 0]), "mass_lost_by_sft_bin": t(bands[:, 1]),
        "kl_reverse_by_sft_bin": t(bands[:, 2]), "kl_forward_by_sft_bin": t(bands[:, 3]),
        "gained_top_ids": t(top_ids[:, 0]), "gained_top_contrib": t(top_vals[:, 0]),
        "gained_top_p": p_of(0), "gained_top_q": q_of(0),
        "lost_top_ids": t(top_ids[:, 1]), "lost_top_contrib": t(top_vals[:, 1]),
        "lost_top_p": p_of(1), "lost_top_q": q_of(1),
    }
