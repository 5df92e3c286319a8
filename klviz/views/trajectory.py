"""A checkpoint series' frames (`klviz trajectory` tables: `checkpoint` and `step` columns) and figures.

    steps = by_step(df)              # one row per step: exact KL both ways per token and per sequence, TV
    gained, lost = band_by_step(df)  # [band x step]: mass gained / lost per SFT-probability band, per token
    moved = most_moved(df)           # response tokens whose probability moved most between consecutive steps

kl_reverse = KL(policy || SFT) = sum_v p log(p/q); kl_forward = KL(SFT || policy) = sum_v q log(q/p).
Pure pandas/numpy/plotly; no torch, no streamlit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from klviz.engine.columns import BAND_LABELS, N_BANDS
from klviz.views.plots import GAINED_COLOR, KL_FORWARD, KL_FORWARD_COLOR, KL_REVERSE, KL_REVERSE_COLOR, LOST_COLOR
from klviz.views.summary import figures
from klviz.views.tables import SEQUENCE_KEYS, _stack

MOVED_TOP = 20
"""Rows most_moved keeps per pair of consecutive steps."""
STEP_FIGURES = ("kl_reverse_per_token", "kl_forward_per_token", "kl_reverse_per_sequence",
                "kl_forward_per_sequence", "tv_per_token")


def is_series(df: pd.DataFrame) -> bool:
    """Whether a token table is a checkpoint series (has a step per row and more than one step)."""
    return "step" in df.columns and "checkpoint" in df.columns and df["step"].nunique() > 1


def steps_of(df: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in df["step"].unique())


def at_step(df: pd.DataFrame, step: int) -> pd.DataFrame:
    """One checkpoint's rows: the token table the other pages draw."""
    return df[df["step"] == step].reset_index(drop=True)


def by_step(df: pd.DataFrame) -> pd.DataFrame:
    """One row per step (ascending): step, checkpoint, n_tokens, and STEP_FIGURES (views.summary.figures)."""
    rows = []
    for step, g in df.groupby("step", sort=True):
        f = figures(g)
        rows.append({"step": int(step), "checkpoint": str(g["checkpoint"].iloc[0]), "n_tokens": f["n_tokens"],
                     **{k: f[k] for k in STEP_FIGURES}})
    return pd.DataFrame(rows, columns=["step", "checkpoint", "n_tokens", *STEP_FIGURES])


def band_by_step(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(gained, lost): frames indexed by band label, one column per step, the mean per token of
    mass_gained_by_sft_bin (sum over v in the band of max(p - q, 0)) and mass_lost_by_sft_bin."""
    out = []
    for col in ("mass_gained_by_sft_bin", "mass_lost_by_sft_bin"):
        data = {int(step): _stack(g[col], N_BANDS).mean(0) for step, g in df.groupby("step", sort=True)}
        out.append(pd.DataFrame(data, index=list(BAND_LABELS)))
    return out[0], out[1]


def still_steps(gained: pd.DataFrame, lost: pd.DataFrame) -> list[int]:
    """The steps (band_by_step's columns) where no mass moved in any band, gained or lost: the policy there
    scores exactly as the SFT model (step 0 of a run, often). Their heatmap columns are white, which reads as
    missing data unless the page says so."""
    return [int(c) for c in gained.columns if not gained[c].to_numpy().any() and not lost[c].to_numpy().any()]


def most_moved(df: pd.DataFrame, top: int = MOVED_TOP) -> pd.DataFrame:
    """Per pair of consecutive steps, the `top` response tokens whose policy probability p(y) moved most.

    Columns: step_from, step_to, prompt_id, sample_id, position, token, p_from, p_to, delta (p_to - p_from),
    ordered by step_to, then |delta| descending.
    """
    keys = [k for k in SEQUENCE_KEYS if k in df.columns] + ["position"]
    cols = ["step_from", "step_to", *keys[:-1], "position", "token", "p_from", "p_to", "delta"]
    steps = steps_of(df)
    frames = []
    for a, b in zip(steps, steps[1:]):
        x = df.loc[df["step"] == a, keys + ["token", "logp_policy"]]
        y = df.loc[df["step"] == b, keys + ["logp_policy"]]
        m = x.merge(y, on=keys, suffixes=("_from", "_to"))
        m["p_from"], m["p_to"] = np.exp(m.pop("logp_policy_from")), np.exp(m.pop("logp_policy_to"))
        m["delta"] = m["p_to"] - m["p_from"]
        m = m.reindex(m["delta"].abs().sort_values(ascending=False, kind="stable").index).head(top)
        frames.append(m.assign(step_from=a, step_to=b))
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def kl_by_step_figure(steps: pd.DataFrame, per: str = "token") -> go.Figure:
    """Exact KL both ways against step (per token or per sequence), and mean TV per token."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=steps["step"], y=steps[f"kl_reverse_per_{per}"], mode="lines+markers",
                             name=KL_REVERSE, line=dict(color=KL_REVERSE_COLOR)))
    fig.add_trace(go.Scatter(x=steps["step"], y=steps[f"kl_forward_per_{per}"], mode="lines+markers",
                             name=KL_FORWARD, line=dict(color=KL_FORWARD_COLOR)))
    fig.add_trace(go.Scatter(x=steps["step"], y=steps["tv_per_token"], mode="lines+markers",
                             name="total variation per token", line=dict(color="#7f7f7f", dash="dot")),
                  secondary_y=True)
    fig.update_layout(title=f"Exact KL per {per} against training step", xaxis_title="step",
                      legend=dict(orientation="h", y=-0.25), margin=dict(t=50, b=10))
    # Both axes from 0, so the curves' zeros meet; the TV axis with its own round ticks and no grid: plotly.js 4
    # defaults an overlaying axis to tickmode "sync" (plotly/plotly.js#7684), whose labels were 0.0149, 0.0496, ...
    fig.update_yaxes(title_text=f"nats per {per}", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="total variation per token (0 to 1)", secondary_y=True, rangemode="tozero",
                     tickmode="auto", showgrid=False)
    return fig


def band_heatmap_figure(gained: pd.DataFrame, lost: pd.DataFrame) -> go.Figure:
    """Band x step heatmaps: mass gained (p > q) and mass lost (q > p) per SFT-probability band, per token."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("mass gained (p > q)", "mass lost (q > p)"),
                        shared_yaxes=True, horizontal_spacing=0.08)
    for col, (frame, color, side) in enumerate(((gained, GAINED_COLOR, "gained"), (lost, LOST_COLOR, "lost")), 1):
        fig.add_trace(go.Heatmap(z=frame.to_numpy(), x=[str(c) for c in frame.columns], y=list(frame.index),
                                 colorscale=[[0, "#ffffff"], [1, color]], zmin=0,
                                 colorbar=dict(x=0.45 if col == 1 else 1.0, len=0.9, title=side),
                                 hovertemplate="step %{x}<br>SFT prob %{y}<br>mass %{z:.4g}<extra>" + side + "</extra>"),
                      row=1, col=col)
        fig.update_xaxes(title_text="step", type="category", row=1, col=col)
    fig.update_yaxes(title_text="SFT probability band q(v)", row=1, col=1)
    fig.update_layout(title="Where mass moved, per SFT-probability band, against step", margin=dict(t=70, b=10))
    return fig

