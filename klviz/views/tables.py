"""Aggregations of the token table (one row per response token; docs/ARCHITECTURE.md).

Pure pandas/numpy, no UI. Every KL names its direction:
    kl_reverse = KL(policy || SFT) = sum_v p(v) log(p(v)/q(v))   (InstructGPT's penalty)
    kl_forward = KL(SFT || policy) = sum_v q(v) log(q(v)/p(v))
k1, k2, k3 are Schulman's per-token estimators of KL(policy || SFT) at the sampled token.
Every function accepts an empty or single-row table. A table without a `source` column (from
`klviz score`) is treated as one source named DEFAULT_SOURCE.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pandas as pd

from klviz.engine.columns import BAND_LABELS, N_BANDS

DEFAULT_SOURCE = "scored"
"""`source` given to rows of a table that has no `source` column (responses scored as given)."""
SEQUENCE_KEYS = ("source", "prompt_id", "sample_id")
# The smallest positive float32 (subnormal): p and q come from float32 softmax, so a 0 here means
# "underflowed", and the log stays finite for plotting.
PROB_FLOOR = 1.4e-45
SEQUENCE_SUMS = ("kl_reverse", "kl_forward", "k1", "k2", "k3")
SHIFT_COLUMNS = ("token", "contrib", "count", "mean_p", "mean_q")
POINT_COLUMNS = ("token", "p", "q", "kind", "contrib")
DETAIL_COLUMNS = ("token_id", "token", "p", "q", "log_p", "log_q", "contrib")
SCATTER_POINTS = 4000  # the Mass shift scatter's largest contributions; more only slows the browser
TOP_TOKENS = 20  # tokens most gained and most lost, each


def _with_source(df: pd.DataFrame) -> pd.DataFrame:
    if "source" in df.columns:
        return df
    return df.assign(source=DEFAULT_SOURCE)


def _stack(column: pd.Series, width: int | None = None) -> np.ndarray:
    """A list column -> Float[n, k] array (k = width, or the lists' length; 0 rows allowed)."""
    if len(column) == 0:
        return np.zeros((0, width or 0))
    return np.stack([np.asarray(v, dtype=np.float64) for v in column])


def per_sequence(df: pd.DataFrame) -> pd.DataFrame:
    """One row per response (source, prompt_id, sample_id).

    n_tokens; kl_reverse = sum_t KL(policy || SFT)_t and kl_forward = sum_t KL(SFT || policy)_t
    (exact); k1, k2, k3 summed over the response's tokens (estimates of the summed KL(policy || SFT));
    tv = mean total variation per token; response = the tokens' text concatenated in position order.
    """
    cols = list(SEQUENCE_KEYS) + ["n_tokens", *SEQUENCE_SUMS, "tv", "response"]
    if len(df) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("source", "prompt_id", "response")
                                          else float) for c in cols})
    d = _with_source(df).sort_values(list(SEQUENCE_KEYS) + ["position"], kind="stable")
    g = d.groupby(list(SEQUENCE_KEYS), sort=True)
    out = g[list(SEQUENCE_SUMS)].sum()
    out.insert(0, "n_tokens", g.size())
    out["tv"] = g["tv"].mean()
    out["response"] = g["token"].agg(lambda s: "".join(map(str, s)))
    return out.reset_index()[cols]


def headline(df: pd.DataFrame) -> dict:
    """The Overview's figures: counts, exact KL both ways per token and per sequence, TV, k1/k3.

    *_per_token: mean over tokens; *_per_sequence: mean over responses of the per-response sum.
    kl_reverse is KL(policy || SFT), kl_forward is KL(SFT || policy). NaN where there are no tokens.
    """
    seq = per_sequence(df)
    nan = float("nan")

    def mean(s: pd.Series) -> float:
        return float(s.mean()) if len(s) else nan

    return {
        "n_sequences": int(len(seq)),
        "n_tokens": int(len(df)),
        "kl_reverse_per_token": mean(df["kl_reverse"]) if len(df) else nan,
        "kl_forward_per_token": mean(df["kl_forward"]) if len(df) else nan,
        "kl_reverse_per_sequence": mean(seq["kl_reverse"]),
        "kl_forward_per_sequence": mean(seq["kl_forward"]),
        "tv_per_token": mean(df["tv"]) if len(df) else nan,
        "k1_per_sequence": mean(seq["k1"]),
        "k3_per_sequence": mean(seq["k3"]),
    }


def _band_frame(gained, lost, rev, fwd) -> pd.DataFrame:
    return pd.DataFrame({"band": np.arange(N_BANDS), "label": list(BAND_LABELS),
                         "mass_gained": gained, "mass_lost": lost,
                         "kl_reverse": rev, "kl_forward": fwd})


def band_totals(df: pd.DataFrame) -> pd.DataFrame:
    """One row per SFT-probability band (7): the mean per token of each band column.

    mass_gained = sum over v in the band with p > q of p - q; mass_lost likewise q - p;
    kl_reverse = the band's share of KL(policy || SFT); kl_forward = its share of KL(SFT || policy).
    Summed over bands: gained = lost = mean tv, and the KLs = their mean per token. Zeros if empty.
    """
    n = len(df)
    means = []
    for col in ("mass_gained_by_sft_bin", "mass_lost_by_sft_bin",
                "kl_reverse_by_sft_bin", "kl_forward_by_sft_bin"):
        arr = _stack(df[col], N_BANDS) if n else np.zeros((0, N_BANDS))
        means.append(arr.sum(0) / n if n else np.zeros(N_BANDS))
    return _band_frame(*means)


def bands_from_ppo(band_record: Mapping) -> pd.DataFrame:
    """A PPO job's band record -> the frame `band_totals` returns (for `mass_moved_figure`).

    The record's lists are sums over tokens; they are divided by its "n_tokens" when present (so
    the frame is per token, like band_totals), else left as sums. kl_reverse_by_sft_bin is the
    band's share of KL(policy || SFT), kl_forward_by_sft_bin of KL(SFT || policy).
    """
    n = band_record.get("n_tokens")
    scale = 1.0 / n if n else 1.0

    def get(key):
        v = band_record.get(key)
        return np.zeros(N_BANDS) if v is None else np.asarray(v, dtype=np.float64) * scale

    return _band_frame(get("mass_gained_by_sft_bin"), get("mass_lost_by_sft_bin"),
                       get("kl_reverse_by_sft_bin"), get("kl_forward_by_sft_bin"))


def _top_entries(df: pd.DataFrame, kind: str, decode: Callable[[int], str]) -> pd.DataFrame:
    """Every (position, top-k entry) of `kind` ("gained"/"lost") as rows: token, p, q, contrib."""
    if len(df) == 0:
        return pd.DataFrame({"token_id": pd.Series(dtype=np.int64), "token": pd.Series(dtype=object),
                             "p": [], "q": [], "contrib": []})
    ids = np.concatenate([np.asarray(v, dtype=np.int64) for v in df[f"{kind}_top_ids"]])
    out = pd.DataFrame({
        "token_id": ids,
        "p": np.concatenate([np.asarray(v, dtype=np.float64) for v in df[f"{kind}_top_p"]]),
        "q": np.concatenate([np.asarray(v, dtype=np.float64) for v in df[f"{kind}_top_q"]]),
        "contrib": np.concatenate([np.asarray(v, dtype=np.float64) for v in df[f"{kind}_top_contrib"]]),
    })
    text = {int(i): str(decode(int(i))) for i in np.unique(ids)}  # decode each id once
    out.insert(1, "token", out["token_id"].map(text))
    return out


def token_shift(df: pd.DataFrame, decode: Callable[[int], str],
                top: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tokens most gained and most lost, aggregated by token text over all positions.

    gained: from each position's top entries by p log(p/q) (their share of KL(policy || SFT));
    lost: from the top entries by q log(q/p) (their share of KL(SFT || policy)). Columns token,
    contrib (sum), count (positions where it was a top entry), mean_p, mean_q; largest contrib first.
    """
    frames = []
    for kind in ("gained", "lost"):
        e = _top_entries(df, kind, decode)
        agg = (e.groupby("token", sort=False)
                .agg(contrib=("contrib", "sum"), count=("contrib", "size"),
                     mean_p=("p", "mean"), mean_q=("q", "mean"))
                .reset_index())
        agg["count"] = agg["count"].astype(np.int64)
        agg = agg.sort_values(["contrib", "token"], ascending=[False, True], kind="stable")
        frames.append(agg.head(top).reset_index(drop=True)[list(SHIFT_COLUMNS)])
    return frames[0], frames[1]


def top_token_points(df: pd.DataFrame, decode: Callable[[int], str],
                     max_points: int = 20000) -> pd.DataFrame:
    """Points for the scatter of SFT probability q against policy probability p.

    One point per (position, top entry): kind "gained" (top by p log(p/q), KL(policy || SFT)) or
    "lost" (top by q log(q/p), KL(SFT || policy)). Above max_points, the largest contribs are kept.
    """
    parts = [_top_entries(df, kind, decode).assign(kind=kind) for kind in ("gained", "lost")]
    pts = pd.concat(parts, ignore_index=True)[list(POINT_COLUMNS)]
    if len(pts) > max_points:
        pts = pts.sort_values("contrib", ascending=False, kind="stable").head(max_points)
    return pts.reset_index(drop=True)


def mass_shift(df: pd.DataFrame, decode: Callable[[int], str], max_points: int = SCATTER_POINTS,
               top: int = TOP_TOKENS) -> dict[str, pd.DataFrame]:
    """Every frame the Mass shift page draws of `df`: "bands" (band_totals), "points"
    (top_token_points, at most max_points), "gained" and "lost" (token_shift, `top` each),
    "profile" (position_profile) and "per_sequence"."""
    gained, lost = token_shift(df, decode, top)
    return {"bands": band_totals(df), "points": top_token_points(df, decode, max_points=max_points),
            "gained": gained, "lost": lost, "profile": position_profile(df), "per_sequence": per_sequence(df)}


def position_profile(df: pd.DataFrame) -> pd.DataFrame:
    """By response position: n (tokens), and the means of kl_reverse = KL(policy || SFT),
    kl_forward = KL(SFT || policy), k1 and k3 (estimates of KL(policy || SFT))."""
    cols = ["position", "n", "kl_reverse", "kl_forward", "k1", "k3"]
    if len(df) == 0:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c in ("position", "n") else float)
                             for c in cols})
    g = df.groupby("position", sort=True)
    out = g[["kl_reverse", "kl_forward", "k1", "k3"]].mean()
    out.insert(0, "n", g.size().astype(np.int64))
    return out.reset_index()[cols]


def _detail_frame(row: Mapping, kind: str, decode: Callable[[int], str]) -> pd.DataFrame:
    ids = np.asarray(row[f"{kind}_top_ids"], dtype=np.int64)
    p = np.asarray(row[f"{kind}_top_p"], dtype=np.float64)
    q = np.asarray(row[f"{kind}_top_q"], dtype=np.float64)
    return pd.DataFrame({
        "token_id": ids, "token": [str(decode(int(i))) for i in ids], "p": p, "q": q,
        "log_p": np.log(np.maximum(p, PROB_FLOOR)), "log_q": np.log(np.maximum(q, PROB_FLOOR)),
        "contrib": np.asarray(row[f"{kind}_top_contrib"], dtype=np.float64),
    })[list(DETAIL_COLUMNS)]


def position_detail(row: Mapping, decode: Callable[[int], str]) -> dict[str, pd.DataFrame]:
    """The token inspector's view of one token-table row (a Series or dict).

    "gained": the entries with the largest p log(p/q) (shares of KL(policy || SFT));
    "lost": the largest q log(q/p) (shares of KL(SFT || policy)). Columns token_id, token, p, q,
    log_p, log_q (natural logs, floored at PROB_FLOOR), contrib; largest contrib first.
    """
    return {kind: _detail_frame(row, kind, decode) for kind in ("gained", "lost")}
