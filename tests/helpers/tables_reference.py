"""The slow twins of klviz.views.tables' fast paths: the implementations they replaced (per-row numpy
arrays, np.stack, a Python join per response, a sort of every entry), kept verbatim so tests can require
the fast ones to give the very same frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from klviz.views.tables import DEFAULT_SOURCE, POINT_COLUMNS, SEQUENCE_KEYS, SEQUENCE_SUMS, SHIFT_COLUMNS


def _with_source(df):
    return df if "source" in df.columns else df.assign(source=DEFAULT_SOURCE)


def stack(column, width=None):
    if len(column) == 0:
        return np.zeros((0, width or 0))
    return np.stack([np.asarray(v, dtype=np.float64) for v in column])


def per_sequence(df):
    cols = list(SEQUENCE_KEYS) + ["n_tokens", *SEQUENCE_SUMS, "tv", "response"]
    d = _with_source(df).sort_values(list(SEQUENCE_KEYS) + ["position"], kind="stable")
    g = d.groupby(list(SEQUENCE_KEYS), sort=True)
    out = g[list(SEQUENCE_SUMS)].sum()
    out.insert(0, "n_tokens", g.size())
    out["tv"] = g["tv"].mean()
    out["response"] = g["token"].agg(lambda s: "".join(map(str, s)))
    return out.reset_index()[cols]


def band_means(df, n_bands):
    return [stack(df[c], n_bands).sum(0) / len(df) for c in
            ("mass_gained_by_sft_bin", "mass_lost_by_sft_bin", "kl_reverse_by_sft_bin", "kl_forward_by_sft_bin")]


def top_entries(df, kind, decode):
    ids = np.concatenate([np.asarray(v, dtype=np.int64) for v in df[f"{kind}_top_ids"]])
    out = pd.DataFrame({
        "token_id": ids,
        "p": np.concatenate([np.asarray(v, dtype=np.float64) for v in df[f"{kind}_top_p"]]),
        "q": np.concatenate([np.asarray(v, dtype=np.float64) for v in df[f"{kind}_top_q"]]),
        "contrib": np.concatenate([np.asarray(v, dtype=np.float64) for v in df[f"{kind}_top_contrib"]]),
    })
    text = {int(i): str(decode(int(i))) for i in np.unique(ids)}
    out.insert(1, "token", out["token_id"].map(text))
    return out


def token_shift(df, decode, top=20):
    frames = []
    for kind in ("gained", "lost"):
        e = top_entries(df, kind, decode)
        agg = (e.groupby("token", sort=False)
                .agg(contrib=("contrib", "sum"), count=("contrib", "size"),
                     mean_p=("p", "mean"), mean_q=("q", "mean"))
                .reset_index())
        agg["count"] = agg["count"].astype(np.int64)
        agg = agg.sort_values(["contrib", "token"], ascending=[False, True], kind="stable")
        frames.append(agg.head(top).reset_index(drop=True)[list(SHIFT_COLUMNS)])
    return frames[0], frames[1]


def top_token_points(df, decode, max_points=20000):
    parts = [top_entries(df, kind, decode).assign(kind=kind) for kind in ("gained", "lost")]
    pts = pd.concat(parts, ignore_index=True)[list(POINT_COLUMNS)]
    if len(pts) > max_points:
        pts = pts.sort_values("contrib", ascending=False, kind="stable").head(max_points)
    return pts.reset_index(drop=True)
