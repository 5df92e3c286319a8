"""Float64 brute force of every token-table column: plain Python loops over the whole vocabulary.

Slow on purpose and written independently of klviz.engine.divergence, so the engine's vectorised float32
path has a twin to be checked against (STYLE.md: the fast path has a slow twin in the tests).
"""

import math

import numpy as np

BAND_EDGES = [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def _log_softmax(logits):
    m = max(logits)
    z = math.log(sum(math.exp(x - m) for x in logits))
    return [x - m - z for x in logits]


def _band(qv):
    for i in range(7):
        if BAND_EDGES[i] <= qv < BAND_EDGES[i + 1]:
            return i
    return 6  # q == 1 belongs to the last band


def _first_order_entropy_change(q, lp, lq):
    """-Cov_{v~q}(log q, log p - log q), centred (two passes) unlike the engine's one-pass form."""
    d = [a - b for a, b in zip(lp, lq)]
    mean_lq = math.fsum(qv * b for qv, b in zip(q, lq) if qv > 0)
    mean_d = math.fsum(qv * x for qv, x in zip(q, d) if qv > 0)
    return -math.fsum(qv * (b - mean_lq) * (x - mean_d) for qv, b, x in zip(q, lq, d) if qv > 0)


def brute_row(policy_logits, sft_logits, y, top_k):
    """Every column for one position, from raw logits, in float64 Python arithmetic."""
    lp = _log_softmax([float(x) for x in policy_logits])
    lq = _log_softmax([float(x) for x in sft_logits])
    V = len(lp)
    p = [math.exp(x) for x in lp]
    q = [math.exp(x) for x in lq]
    rev = [p[v] * (lp[v] - lq[v]) for v in range(V)]
    fwd = [q[v] * (lq[v] - lp[v]) for v in range(V)]
    r = lp[y] - lq[y]
    row = {
        "logp_policy": lp[y], "logp_sft": lq[y], "log_ratio": r,
        "kl_reverse": sum(rev), "kl_forward": sum(fwd),
        "entropy_policy": -sum(p[v] * lp[v] for v in range(V)),
        "entropy_sft": -sum(q[v] * lq[v] for v in range(V)),
        "entropy_change_first_order": _first_order_entropy_change(q, lp, lq),
        "tv": 0.5 * sum(abs(p[v] - q[v]) for v in range(V)),
        "k1": r, "k2": r * r / 2, "k3": math.exp(-r) - 1 + r,
        "rank_sft": 1 + sum(1 for v in range(V) if q[v] > q[y]),
        "rank_policy": 1 + sum(1 for v in range(V) if p[v] > p[y]),
    }
    bands = {n: [0.0] * 7 for n in ("mass_gained_by_sft_bin", "mass_lost_by_sft_bin",
                                    "kl_reverse_by_sft_bin", "kl_forward_by_sft_bin")}
    for v in range(V):
        b = _band(q[v])
        if p[v] > q[v]:
            bands["mass_gained_by_sft_bin"][b] += p[v] - q[v]
        if q[v] > p[v]:
            bands["mass_lost_by_sft_bin"][b] += q[v] - p[v]
        bands["kl_reverse_by_sft_bin"][b] += rev[v]
        bands["kl_forward_by_sft_bin"][b] += fwd[v]
    row.update(bands)
    k = min(top_k, V)
    g = sorted(range(V), key=lambda v: -rev[v])[:k]
    lo = sorted(range(V), key=lambda v: -fwd[v])[:k]
    row.update({
        "gained_top_ids": g, "gained_top_contrib": [rev[v] for v in g],
        "gained_top_p": [p[v] for v in g], "gained_top_q": [q[v] for v in g],
        "lost_top_ids": lo, "lost_top_contrib": [fwd[v] for v in lo],
        "lost_top_p": [p[v] for v in lo], "lost_top_q": [q[v] for v in lo],
    })
    return row


def assert_row_close(got: dict, want: dict, rtol=1e-5, atol=1e-6, skip=()):
    """Compare one engine row (mapping column -> value) against brute_row's output."""
    for name, w in want.items():
        if name in skip:
            continue
        g = got[name]
        if name.endswith("_ids") or name.startswith("rank_"):
            assert np.atleast_1d(np.asarray(g)).tolist() == np.atleast_1d(np.asarray(w)).tolist(), name
        else:
            np.testing.assert_allclose(np.asarray(g, dtype=np.float64), np.asarray(w), rtol=rtol, atol=atol,
                                       err_msg=name)
