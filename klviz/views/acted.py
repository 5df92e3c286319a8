"""Where RL acted: token shift, forking positions, KL spikes, entropy change and RL's Razor, from a
token table (one row per response token). Pure pandas/numpy, no UI; every figure here is checked
against float64 loops in tests/unit/test_acted.py.

    kl_reverse = KL(policy || SFT) = sum_v p(v) log(p(v)/q(v))
    kl_forward = KL(SFT || policy) = sum_v q(v) log(q(v)/p(v))

- Token shift (Lin et al. 2023, "The Unlocking Spell on Base LLMs", URIAL): a sampled token is
  `unshifted` if the SFT model also ranks it first (rank_sft = 1), `marginal` if rank_sft is 2-3 and
  `shifted` if rank_sft > 3. Counted over policy-sampled rows (the policy's own choices), or over all
  rows of a table without a `source` column.
- Forking positions (Wang et al. 2025, "Beyond the 80/20 Rule"): the FORKING_FRACTION of rows with the
  highest SFT entropy, k = round(FORKING_FRACTION * n) rows (at least one), ties broken by row order.
- Entropy change: exact `entropy_policy - entropy_sft` against its first-order prediction
  `entropy_change_first_order` = -Cov_{v~q}(log q(v), log p(v) - log q(v)) (Cui et al. 2025).
- RL's Razor (Shenfeld et al. 2025): on SFT samples, the mean over responses of the summed
  KL(SFT || policy), which they found predicts forgetting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from klviz.views.tables import SEQUENCE_KEYS, _with_source, per_sequence

SHIFT_CLASSES = ("unshifted", "marginal", "shifted")
MARGINAL_MAX_RANK = 3  # rank_sft 2..3 is marginal, above it shifted (Lin et al. 2023)
FORKING_FRACTION = 0.2  # Wang et al. 2025: the top 20% entropy tokens
SPIKES = 20  # the largest-KL positions listed
CONTEXT_TOKENS = 10  # tokens of context either side of a KL spike
FIRST_ORDER = "entropy_change_first_order"
SPIKE_COLUMNS = (*SEQUENCE_KEYS, "position", "token", "kl_reverse", "kl_forward", "direction",
                 "kl_max", "before", "after")


def shift_class(rank_sft) -> np.ndarray:
    """Per row: "unshifted" (rank_sft = 1), "marginal" (2-3) or "shifted" (> 3)."""
    r = np.asarray(rank_sft, dtype=np.int64)
    return np.where(r <= 1, SHIFT_CLASSES[0], np.where(r <= MARGINAL_MAX_RANK, SHIFT_CLASSES[1],
                                                       SHIFT_CLASSES[2]))


def shift_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows token shift is counted over: policy-sampled rows, or all rows without a source."""
    return df[df["source"] == "policy"] if "source" in df.columns else df


def token_shift_fractions(df: pd.DataFrame) -> dict[str, float]:
    """{unshifted, marginal, shifted}: fractions of the shift_rows of df (NaN when there are none)."""
    cls = shift_class(shift_rows(df)["rank_sft"])
    return {c: float(np.mean(cls == c)) if len(cls) else float("nan") for c in SHIFT_CLASSES}


def token_shift_by_position(df: pd.DataFrame) -> pd.DataFrame:
    """By response position (over shift_rows): n and the fraction of each shift class."""
    rows = shift_rows(df)
    cols = ["position", "n", *SHIFT_CLASSES]
    if len(rows) == 0:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c in ("position", "n") else float) for c in cols})
    cls = shift_class(rows["rank_sft"])
    d = pd.DataFrame({"position": rows["position"].to_numpy(), **{c: cls == c for c in SHIFT_CLASSES}})
    g = d.groupby("position", sort=True)
    frac = g[list(SHIFT_CLASSES)].mean().astype(np.float64)
    frac.insert(0, "n", g.size().astype(np.int64))
    return frac.reset_index()[cols]


def most_shifted_tokens(df: pd.DataFrame, top: int = 20) -> pd.DataFrame:
    """Sampled tokens (by text, over shift_rows) most often shifted (rank_sft > 3).

    Columns token, shifted (count of shifted occurrences), n (occurrences), shifted_fraction,
    mean_rank_sft (over its occurrences); most shifted first, ties by token text.
    """
    rows = shift_rows(df)
    d = pd.DataFrame({"token": rows["token"].astype(str).to_numpy(),
                      "shifted": (shift_class(rows["rank_sft"]) == SHIFT_CLASSES[2]).astype(np.int64),
                      "rank": rows["rank_sft"].to_numpy(dtype=np.float64)})
    agg = d.groupby("token", sort=False).agg(shifted=("shifted", "sum"), n=("shifted", "size"),
                                             mean_rank_sft=("rank", "mean")).reset_index()
    agg["shifted"] = agg["shifted"].astype(np.int64)
    agg["n"] = agg["n"].astype(np.int64)
    agg["shifted_fraction"] = agg["shifted"] / agg["n"]
    agg = agg[agg["shifted"] > 0].sort_values(["shifted", "token"], ascending=[False, True], kind="stable")
    return agg.head(top).reset_index(drop=True)[["token", "shifted", "n", "shifted_fraction", "mean_rank_sft"]]


def top_fraction_mask(values, fraction: float = FORKING_FRACTION) -> np.ndarray:
    """Bool[n]: the k = max(1, round(fraction * n)) largest values (ties: earlier rows first)."""
    v = np.asarray(values, dtype=np.float64)
    mask = np.zeros(len(v), dtype=bool)
    if len(v):
        k = max(1, int(round(fraction * len(v))))
        mask[np.argsort(-v, kind="stable")[:k]] = True
    return mask


def forking(df: pd.DataFrame, fraction: float = FORKING_FRACTION) -> dict[str, float]:
    """Forking positions: the top `fraction` of df's rows by entropy_sft.

    token_share (k / n), entropy_sft_threshold (the smallest entropy_sft among them, nats),
    share_kl_reverse (their share of the summed KL(policy || SFT)), share_kl_forward (of the summed
    KL(SFT || policy)), and overlap: the fraction of them that are also among the top `fraction` by
    entropy_policy. NaN where df has no rows (or a KL sums to 0).
    """
    nan = float("nan")
    if len(df) == 0:
        return {"n_rows": 0, "n_forking": 0, "token_share": nan, "entropy_sft_threshold": nan,
                "share_kl_reverse": nan, "share_kl_forward": nan, "overlap": nan}
    sft = top_fraction_mask(df["entropy_sft"], fraction)
    pol = top_fraction_mask(df["entropy_policy"], fraction)

    def share(col: str) -> float:
        v = df[col].to_numpy(dtype=np.float64)
        total = v.sum()
        return float(v[sft].sum() / total) if total > 0 else nan

    k = int(sft.sum())
    return {"n_rows": int(len(df)), "n_forking": k, "token_share": k / len(df),
            "entropy_sft_threshold": float(df["entropy_sft"].to_numpy(dtype=np.float64)[sft].min()),
            "share_kl_reverse": share("kl_reverse"), "share_kl_forward": share("kl_forward"),
            "overlap": float((sft & pol).sum() / k)}


def _context(tokens: list[str], i: int, width: int) -> tuple[str, str]:
    return "".join(tokens[max(0, i - width):i]), "".join(tokens[i + 1:i + 1 + width])


def kl_spikes(df: pd.DataFrame, n: int = SPIKES, context: int = CONTEXT_TOKENS) -> pd.DataFrame:
    """The n rows with the largest KL in either direction, kl_max = max(KL(policy || SFT),
    KL(SFT || policy)), largest first (ties by row order); direction names the larger one.

    before / after: the text of up to `context` tokens either side within the same response.
    """
    d = _with_source(df)
    if len(d) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SPIKE_COLUMNS})
    rev, fwd = d["kl_reverse"].to_numpy(np.float64), d["kl_forward"].to_numpy(np.float64)
    kl_max = np.maximum(rev, fwd)
    pick = np.argsort(-kl_max, kind="stable")[:n]
    chosen = d.iloc[pick]
    seq_id = d.groupby(list(SEQUENCE_KEYS), sort=False).ngroup().to_numpy()
    position, text = d["position"].to_numpy(), d["token"].astype(str).to_numpy()
    before, after = [], []
    for i in pick:
        rows = np.flatnonzero(seq_id == seq_id[i])
        rows = rows[np.argsort(position[rows], kind="stable")]  # the response in position order
        b, a = _context(text[rows].tolist(), int(np.flatnonzero(rows == i)[0]), context)
        before.append(b)
        after.append(a)
    out = chosen[[*SEQUENCE_KEYS, "position", "token", "kl_reverse", "kl_forward"]].copy()
    out["direction"] = np.where(rev[pick] >= fwd[pick], "KL(policy || SFT)", "KL(SFT || policy)")
    out["kl_max"] = kl_max[pick]
    out["before"], out["after"] = before, after
    return out.reset_index(drop=True)[list(SPIKE_COLUMNS)]


def rl_razor(df: pd.DataFrame) -> dict[str, float]:
    """RL's Razor (Shenfeld et al. 2025) forgetting predictor: on SFT samples (source == "sft"),
    kl_forward_per_sequence = the mean over responses of sum_t KL(SFT || policy)_t, in nats."""
    sft = df[df["source"] == "sft"] if "source" in df.columns else df.iloc[:0]
    seq = per_sequence(sft)
    return {"n_sequences": int(len(seq)),
            "kl_forward_per_sequence": float(seq["kl_forward"].mean()) if len(seq) else float("nan")}


def entropy_change(df: pd.DataFrame) -> dict:
    """Exact entropy change H(policy) - H(SFT) per row against the first-order prediction.

    Returns {"exact": Float[n], "first_order": Float[n] (NaN where the table has no such column),
    "exact_change_mean", "first_order_change_mean" (nats per token), "correlation" (Pearson; NaN
    with fewer than two rows or no spread)}.
    """
    exact = (df["entropy_policy"].to_numpy(np.float64) - df["entropy_sft"].to_numpy(np.float64))
    first = (df[FIRST_ORDER].to_numpy(np.float64) if FIRST_ORDER in df.columns
             else np.full(len(df), np.nan))
    nan = float("nan")
    corr = nan
    if len(df) >= 2 and np.isfinite(first).all() and exact.std() > 0 and first.std() > 0:
        corr = float(np.corrcoef(exact, first)[0, 1])
    return {"exact": exact, "first_order": first,
            "exact_change_mean": float(exact.mean()) if len(df) else nan,
            "first_order_change_mean": float(first.mean()) if len(df) else nan, "correlation": corr}


def acted_summary(df: pd.DataFrame) -> dict:
    """The `klviz summary --json` sections: token_shift {unshifted, marginal, shifted} (fractions of
    policy-sampled rows, or of all rows without a source), forking {entropy_sft_threshold,
    share_kl_reverse, share_kl_forward} and entropy {exact_change_mean, first_order_change_mean}
    (nats per token), forking and entropy over all rows."""
    f, e = forking(df), entropy_change(df)
    return {"token_shift": token_shift_fractions(df),
            "forking": {k: f[k] for k in ("entropy_sft_threshold", "share_kl_reverse", "share_kl_forward")},
            "entropy": {k: e[k] for k in ("exact_change_mean", "first_order_change_mean")}}


def where_rl_acted(df: pd.DataFrame, source: str | None = None, spikes: int = SPIKES) -> dict:
    """Everything the "Where RL acted" page shows: over the rows of `source` (all rows for None or
    "both"), "token_shift" (token_shift_fractions), "shift_by_position", "most_shifted", "forking",
    "spikes" (kl_spikes, `spikes` rows) and "entropy" (entropy_change); over the whole table,
    "razor" (rl_razor: it reads the SFT samples whichever rows are shown)."""
    rows = df if source in (None, "both") or "source" not in df.columns else df[df["source"] == source]
    return {"token_shift": token_shift_fractions(rows), "shift_by_position": token_shift_by_position(rows),
            "most_shifted": most_shifted_tokens(rows), "forking": forking(rows), "spikes": kl_spikes(rows, spikes),
            "razor": rl_razor(df), "entropy": entropy_change(rows)}
