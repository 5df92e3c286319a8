"""Plotly figures for the KL lab page; no streamlit here, and no math beyond arranging klviz.lab.toy's output.

Directions as everywhere in klviz: KL(pi||SFT) = sum pi log(pi/SFT) is the reverse KL (InstructGPT's
penalty), KL(SFT||pi) = sum SFT log(SFT/pi) the forward KL.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from klviz.lab import toy
from klviz.views.plots import KL_FORWARD_COLOR, KL_REVERSE_COLOR, POLICY_COLOR, SFT_COLOR, readable

# One colour for the policy, the SFT model and each KL direction on every page (klviz.views.plots).
REVERSE_COLOR, FORWARD_COLOR = KL_REVERSE_COLOR, KL_FORWARD_COLOR
REWARD_SHADES = ("#9ecae1", "#4292c6", "#08519c")  # k1, k2, k3 in the reward
LOSS_SHADES = ("#fdae6b", "#f16913", "#a63603")  # k1, k2, k3 as a loss


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


GAINED_FILL, LOST_FILL = _rgba(REVERSE_COLOR, 0.12), _rgba(FORWARD_COLOR, 0.12)
MAX_LINE_POINTS = 400  # points drawn on the convergence line; the running mean is kept exact


def action_labels(k: int) -> list[str]:
    """Fixed labels a0..a{k-1}: no user text reaches a figure."""
    return [f"a{i}" for i in range(k)]


@readable
def distributions_figure(policy: np.ndarray, ref: np.ndarray) -> go.Figure:
    """pi and SFT on one chart, and each action's term in KL(pi||SFT) and KL(SFT||pi) below it.

    The write-up's two cases are shaded: SFT low / policy high (largest pi/SFT, the reverse KL's big
    term) and SFT high / policy low (largest SFT/pi, the forward KL's big term).
    """
    labels = action_labels(policy.size)
    rev_terms, fwd_terms = toy.kl_contributions(policy, ref)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1)
    fig.add_bar(x=labels, y=policy, name="policy pi", marker_color=POLICY_COLOR, row=1, col=1)
    fig.add_bar(x=labels, y=ref, name="SFT", marker_color=SFT_COLOR, row=1, col=1)
    fig.add_bar(x=labels, y=rev_terms, name="pi log(pi/SFT)  [KL(pi||SFT)]", marker_color=REVERSE_COLOR,
                row=2, col=1)
    fig.add_bar(x=labels, y=fwd_terms, name="SFT log(SFT/pi)  [KL(SFT||pi)]", marker_color=FORWARD_COLOR,
                row=2, col=1)
    cases = toy.highlighted_actions(policy, ref)
    if cases is not None:
        gained, lost = cases
        for idx, fill, text in ((gained, GAINED_FILL, "SFT low / policy high"),
                                (lost, LOST_FILL, "SFT high / policy low")):
            fig.add_vrect(x0=idx - 0.5, x1=idx + 0.5, fillcolor=fill, line_width=0, layer="below",
                          row="all", col=1)
            fig.add_annotation(x=labels[idx], y=1.0, yref="y domain", yanchor="bottom", text=text,
                               showarrow=False, row=1, col=1)
    fig.update_layout(barmode="group", height=560, legend=dict(orientation="h", y=-0.12))
    fig.update_yaxes(title_text="probability", row=1, col=1)
    fig.update_yaxes(title_text="term in each KL (nats)", row=2, col=1)
    return fig


@readable
def convergence_figure(running_means: np.ndarray, kl_reverse: float, sd: float) -> go.Figure:
    """Mean of the first n log-ratios (a ~ pi) against n, with KL(pi||SFT) and +-2 sd/sqrt(n)."""
    n = np.arange(1, running_means.size + 1)
    idx = np.unique(np.geomspace(1, n.size, num=min(MAX_LINE_POINTS, n.size)).astype(int)) - 1
    band = 2 * sd / np.sqrt(n[idx])
    fig = go.Figure()
    fig.add_scatter(x=n[idx], y=kl_reverse + band, mode="lines", line=dict(width=0), showlegend=False,
                    hoverinfo="skip")
    fig.add_scatter(x=n[idx], y=kl_reverse - band, mode="lines", line=dict(width=0), fill="tonexty",
                    fillcolor=_rgba(REVERSE_COLOR, 0.15), name="exact KL +- 2 sd/sqrt(n)")
    fig.add_scatter(x=n[idx], y=running_means[idx], mode="lines", name="mean of n log(pi/SFT) samples",
                    line=dict(color=POLICY_COLOR))
    fig.add_hline(y=kl_reverse, line_color=REVERSE_COLOR, line_dash="dash",
                  annotation_text=f"KL(pi||SFT) = {kl_reverse:.4g}")
    fig.update_layout(xaxis_type="log", xaxis_title="n samples a ~ pi",
                      yaxis_title="nats (mean of log(pi/SFT) over the samples)", height=380,
                      legend=dict(orientation="h", yanchor="top", y=-0.3))  # its top below the x title
    return fig


@readable
def gradients_figure(grads: dict[str, np.ndarray]) -> go.Figure:
    """Expected penalty gradient per logit for each placement, beside the two exact KL gradients."""
    labels = action_labels(next(iter(grads.values())).size)
    colors = dict(zip([f"{k} in reward" for k in toy.ESTIMATORS], REWARD_SHADES))
    colors |= dict(zip([f"{k} as loss" for k in toy.ESTIMATORS], LOSS_SHADES))
    colors |= {"grad KL(pi||ref)": REVERSE_COLOR, "grad KL(ref||pi)": FORWARD_COLOR}
    fig = go.Figure()
    for name, g in grads.items():
        exact = name.startswith("grad KL")
        style = dict(marker_line_width=2, marker_line_color="black") if exact else {}
        fig.add_bar(x=labels, y=g, name=name, marker_color=colors.get(name), **style)
    fig.update_layout(barmode="group", height=420, xaxis_title="policy logit",
                      yaxis_title="expected gradient (descend)",
                      legend=dict(orientation="h", yanchor="top", y=-0.3))  # its top below the x title
    return fig


@readable
def optima_figure(ref: np.ndarray, reverse_opt: np.ndarray, forward_opt: np.ndarray,
                  reward: np.ndarray) -> go.Figure:
    """SFT beside the KL-regularized optima: argmax E[r] - beta KL(pi||SFT) and - beta KL(SFT||pi)."""
    labels = action_labels(ref.size)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.08)
    fig.add_bar(x=labels, y=ref, name="SFT", marker_color=SFT_COLOR, row=1, col=1)
    fig.add_bar(x=labels, y=reverse_opt, name="optimum with KL(pi||SFT)", marker_color=REVERSE_COLOR, row=1, col=1)
    fig.add_bar(x=labels, y=forward_opt, name="optimum with KL(SFT||pi)", marker_color=FORWARD_COLOR, row=1, col=1)
    fig.add_bar(x=labels, y=reward, name="reward", marker_color="black", row=2, col=1)
    fig.update_layout(barmode="group", height=460, legend=dict(orientation="h", y=-0.15))
    fig.update_yaxes(title_text="probability", row=1, col=1)
    fig.update_yaxes(title_text="reward", row=2, col=1)
    return fig
