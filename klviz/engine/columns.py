"""The token table's columns and the SFT-probability bands, and the one function that assembles
the columns from what each path computes. No torch or numpy import, so the dashboard can draw a
stored table before torch has loaded. klviz.engine.divergence and fused_cpu compute them.
"""

from klviz.engine.estimators import estimators

# SFT-probability bands: band i holds edge_i <= q(v) < edge_{i+1}; the last band includes q = 1.
BAND_EDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
N_BANDS = len(BAND_EDGES) - 1
BAND_LABELS = ("<1e-6", "1e-6..1e-5", "1e-5..1e-4", "1e-4..1e-3", "1e-3..0.01", "0.01..0.1", ">=0.1")

SCALAR_COLUMNS = ("logp_policy", "logp_sft", "log_ratio", "kl_reverse", "kl_forward",
                  "entropy_policy", "entropy_sft", "entropy_change_first_order", "tv", "k1", "k2", "k3")
RANK_COLUMNS = ("rank_sft", "rank_policy")
BAND_COLUMNS = ("mass_gained_by_sft_bin", "mass_lost_by_sft_bin",
                "kl_reverse_by_sft_bin", "kl_forward_by_sft_bin")
TOP_COLUMNS = ("gained_top_ids", "gained_top_contrib", "gained_top_p", "gained_top_q",
               "lost_top_ids", "lost_top_contrib", "lost_top_p", "lost_top_q")


def token_columns(logp_y, logq_y, entropies, cross, ranks, bands, gained_top, lost_top) -> dict:
    """Every column of the token table, in the order above, for n positions (torch or numpy).

    logp_y, logq_y: [n] log p(y_t), log q(y_t) of the sampled token; entropies: (policy, sft), each [n];
    cross: [n] sum_v q(v) log q(v) (log p(v) - log q(v)), from which, with H(SFT) and KL(SFT || policy),
    entropy_change_first_order = -Cov_{v~q}(log q, log p - log q) = H(SFT) KL(SFT || policy) - cross
    (Cui et al. 2025: E_q[log q] = -H(SFT) and E_q[log p - log q] = -KL(SFT || policy));
    ranks: (rank_sft, rank_policy), each [n]; bands: the four BAND_COLUMNS, each [n, 7];
    gained_top, lost_top: (ids, contrib, p, q), each [n, k]. Both KLs and TV are the band sums.
    """
    gained, lost, kl_reverse_b, kl_forward_b = bands
    log_ratio = logp_y - logq_y
    kl_forward = kl_forward_b.sum(1)
    return {
        "logp_policy": logp_y, "logp_sft": logq_y, "log_ratio": log_ratio,
        "kl_reverse": kl_reverse_b.sum(1), "kl_forward": kl_forward,
        "entropy_policy": entropies[0], "entropy_sft": entropies[1],
        "entropy_change_first_order": entropies[1] * kl_forward - cross,
        "tv": 0.5 * (gained.sum(1) + lost.sum(1)),  # 1/2 sum_v |p - q|
        **estimators(log_ratio),
        **dict(zip(RANK_COLUMNS, ranks)),
        **dict(zip(BAND_COLUMNS, bands)),
        **dict(zip(TOP_COLUMNS, (*gained_top, *lost_top))),
    }
