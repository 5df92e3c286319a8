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

from klviz.engine.columns import BAND_COLUMNS, BAND_LABELS, N_BANDS

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
    """A list column -> Float[n, k] array (k = width, or the lists' length; 0 rows allowed).

    One np.concatenate over the cells rather than np.stack's Python work per row (100k rows); the same
    float64 values either way (cells of unequal length raise, as np.stack does)."""
    n = len(column)
    if n == 0:
        return np.zeros((0, width or 0))
    cells = column.to_numpy(dtype=object)
    lengths = np.fromiter(map(len, cells), dtype=np.int64, count=n)
    if np.any(lengths != lengths[0]):
        raise ValueError(f"{column.name}: list cells of different lengths cannot be stacked.")
    return np.concatenate(cells).astype(np.float64, copy=False).reshape(n, int(lengths[0]))


def _sorted_sequences(df: pd.DataFrame, columns: list[str]):
    """(rows sorted by response then position, their groupby over SEQUENCE_KEYS) of `columns` only."""
    d = _with_source(df[[c for c in columns if c in df.columns] + ["position"]])
    d = d.sort_values(list(SEQUENCE_KEYS) + ["position"], kind="stable")
    return d, d.groupby(list(SEQUENCE_KEYS), sort=True)


def _sequence_sums(df: pd.DataFrame, g) -> pd.DataFrame:
    out = g[list(SEQUENCE_SUMS)].sum()
    out.insert(0, "n_tokens", g.size())
    out["tv"] = g["tv"].mean()
    return out


def _responses(d: pd.DataFrame, g) -> list[str]:
    """Each response's tokens joined in position order, in the groupby's order (d is sorted by it)."""
    codes = g.ngroup().to_numpy()
    tokens = d["token"].to_numpy(dtype=object)
    if len(codes) and (codes[0] != 0 or np.any(np.diff(codes) != (np.diff(codes) != 0))):
        return list(g["token"].agg(lambda s: "".join(map(str, s))))  # keys with NaN: pandas' own order
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    return ["".join(map(str, tokens[a:b])) for a, b in zip(starts, ends)]


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
    d, g = _sorted_sequences(df, [*SEQUENCE_KEYS, *SEQUENCE_SUMS, "tv", "token"])
    out = _sequence_sums(d, g)
    out["response"] = _responses(d, g)
    return out.reset_index()[cols]


def headline(df: pd.DataFrame) -> dict:
    """The Overview's figures: counts, exact KL both ways per token and per sequence, TV, k1/k3.

    *_per_token: mean over tokens; *_per_sequence: mean over responses of the per-response sum.
    kl_reverse is KL(policy || SFT), kl_forward is KL(SFT || policy). NaN where there are no tokens.
    """
    nan = float("nan")
    if len(df):  # per_sequence's sums, without the response text the headline does not show
        seq = _sequence_sums(*_sorted_sequences(df, [*SEQUENCE_KEYS, *SEQUENCE_SUMS, "tv"]))
    else:
        seq = per_sequence(df)

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
    return band_means({col: _stack(df[col], N_BANDS) if n else np.zeros((0, N_BANDS)) for col in BAND_COLUMNS})


def band_means(bands: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """band_totals of a table given as its BAND_COLUMNS, each Float[n, 7] (row = token; for example
    klviz.tokentable.LightTable.bands, read without per-row arrays): each column's mean over rows."""
    means = []
    for col in BAND_COLUMNS:
        arr = bands[col]
        means.append(arr.sum(0) / len(arr) if len(arr) else np.zeros(N_BANDS))
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


def _flat(column: pd.Series, dtype) -> np.ndarray:
    """A list column's cells end to end (row by row) as one array of `dtype`."""
    if len(column) == 0:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(column.to_numpy(dtype=object)).astype(dtype, copy=False)


def _entry_arrays(df: pd.DataFrame, kind: str) -> dict[str, np.ndarray]:
    """Every (position, top-k entry) of `kind` ("gained"/"lost"), row by row: token_id, p, q, contrib."""
    return {"token_id": _flat(df[f"{kind}_top_ids"], np.int64), "p": _flat(df[f"{kind}_top_p"], np.float64),
            "q": _flat(df[f"{kind}_top_q"], np.float64), "contrib": _flat(df[f"{kind}_top_contrib"], np.float64)}


def _texts(ids: np.ndarray, decode: Callable[[int], str]) -> np.ndarray:
    """str(decode(id)) for each id, decoding each distinct id once (ids hashed, not sorted)."""
    codes, uniq = pd.factorize(ids)
    return np.array([str(decode(int(i))) for i in uniq] + [""], dtype=object)[codes]


def _text_codes(ids: np.ndarray, decode: Callable[[int], str]) -> tuple[np.ndarray, np.ndarray]:
    """(code per entry, text per code): codes number the texts in order of first appearance, as a
    groupby on the text with sort=False orders its groups (several ids may share one text)."""
    id_codes, uniq = pd.factorize(ids)  # uniq in order of first appearance
    text_of_id, texts = pd.factorize(np.array([str(decode(int(i))) for i in uniq], dtype=object))
    return text_of_id[id_codes], np.asarray(texts, dtype=object)


def _largest(values: np.ndarray, n: int) -> np.ndarray:
    """Row numbers of the n largest values, ties in row order: the head(n) of pandas' stable descending
    sort (sorting.nargsort), found by a partition and a sort of the candidates only."""
    if n <= 0 or n >= len(values) or np.isnan(values).any():
        return pd.Series(values).sort_values(ascending=False, kind="stable").index[:n].to_numpy()
    threshold = np.partition(values, len(values) - n)[len(values) - n]
    candidates = np.flatnonzero(values >= threshold)
    return candidates[np.lexsort((candidates, -values[candidates]))][:n]


def _shift(e: dict[str, np.ndarray], decode: Callable[[int], str], top: int) -> pd.DataFrame:
    """token_shift's frame of one kind's entries: grouped by token text (through integer codes, in order of
    first appearance, each group's entries in row order: the sums a groupby on the text itself gives)."""
    codes, labels = _text_codes(e["token_id"], decode)
    frame = pd.DataFrame({"code": codes, "contrib": e["contrib"], "p": e["p"], "q": e["q"]})
    agg = (frame.groupby("code", sort=False)
                .agg(contrib=("contrib", "sum"), count=("contrib", "size"), mean_p=("p", "mean"), mean_q=("q", "mean"))
                .reset_index())
    agg.insert(0, "token", pd.Series(labels[agg.pop("code").to_numpy()], dtype=str))
    agg["count"] = agg["count"].astype(np.int64)
    agg = agg.sort_values(["contrib", "token"], ascending=[False, True], kind="stable")
    return agg.head(top).reset_index(drop=True)[list(SHIFT_COLUMNS)]


def token_shift(df: pd.DataFrame, decode: Callable[[int], str],
                top: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tokens most gained and most lost, aggregated by token text over all positions.

    gained: from each position's top entries by p log(p/q) (their share of KL(policy || SFT));
    lost: from the top entries by q log(q/p) (their share of KL(SFT || policy)). Columns token,
    contrib (sum), count (positions where it was a top entry), mean_p, mean_q; largest contrib first.
    """
    return _shift(_entry_arrays(df, "gained"), decode, top), _shift(_entry_arrays(df, "lost"), decode, top)


def _points(gained: dict, lost: dict, decode: Callable[[int], str], max_points: int) -> pd.DataFrame:
    both = {k: np.concatenate([gained[k], lost[k]]) for k in gained}
    kind = np.repeat(np.array(["gained", "lost"], dtype=object), [len(gained["p"]), len(lost["p"])])
    keep = np.arange(len(kind))
    if len(keep) > max_points:
        keep = _largest(both["contrib"], max_points)
    return pd.DataFrame({"token": pd.Series(_texts(both["token_id"][keep], decode), dtype=str),
                         "p": both["p"][keep], "q": both["q"][keep],
                         "kind": pd.Series(kind[keep], dtype=str), "contrib": both["contrib"][keep]})


def top_token_points(df: pd.DataFrame, decode: Callable[[int], str],
                     max_points: int = 20000) -> pd.DataFrame:
    """Points for the scatter of SFT probability q against policy probability p.

    One point per (position, top entry): kind "gained" (top by p log(p/q), KL(policy || SFT)) or
    "lost" (top by q log(q/p), KL(SFT || policy)). Above max_points, the largest contribs are kept.
    """
    return _points(_entry_arrays(df, "gained"), _entry_arrays(df, "lost"), decode, max_points)


def mass_shift(df: pd.DataFrame, decode: Callable[[int], str], max_points: int = SCATTER_POINTS,
               top: int = TOP_TOKENS) -> dict[str, pd.DataFrame]:
    """Every frame the Mass shift page draws of `df`: "bands" (band_totals), "points"
    (top_token_points, at most max_points), "gained" and "lost" (token_shift, `top` each),
    "profile" (position_profile) and "per_sequence"."""
    gained, lost = _entry_arrays(df, "gained"), _entry_arrays(df, "lost")  # flattened once for all three
    return {"bands": band_totals(df), "points": _points(gained, lost, decode, max_points),
            "gained": _shift(gained, decode, top), "lost": _shift(lost, decode, top),
            "profile": position_profile(df), "per_sequence": per_sequence(df)}


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
