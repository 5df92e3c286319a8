"""The token table's columns and the SFT-probability bands: names only, no torch, so the
dashboard can draw a stored table before torch has loaded. klviz.engine.divergence computes them.
"""

# SFT-probability bands: band i holds edge_i <= q(v) < edge_{i+1}; the last band includes q = 1.
BAND_EDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
N_BANDS = len(BAND_EDGES) - 1
BAND_LABELS = ("<1e-6", "1e-6..1e-5", "1e-5..1e-4", "1e-4..1e-3", "1e-3..0.01", "0.01..0.1", ">=0.1")

SCALAR_COLUMNS = ("logp_policy", "logp_sft", "log_ratio", "kl_reverse", "kl_forward",
                  "entropy_policy", "entropy_sft", "tv", "k1", "k2", "k3")
RANK_COLUMNS = ("rank_sft", "rank_policy")
BAND_COLUMNS = ("mass_gained_by_sft_bin", "mass_lost_by_sft_bin",
                "kl_reverse_by_sft_bin", "kl_forward_by_sft_bin")
TOP_COLUMNS = ("gained_top_ids", "gained_top_contrib", "gained_top_p", "gained_top_q",
               "lost_top_ids", "lost_top_contrib", "lost_top_p", "lost_top_q")
