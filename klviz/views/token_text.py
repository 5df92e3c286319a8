"""One response as wrapped HTML text, each token's background coloured by a quantity (the Token
inspector). No streamlit: the page passes the string to st.html, which sanitises it (DOMPurify).

Token text is made visible (plots.visible_token_text: · space, ↵ newline, → tab) and html-escaped
exactly once, here; a newline token also ends its line. Signed quantities (log_ratio, k1) use a
diverging scale centred at 0; KLs and k3 (>= 0) a sequential one from 0.
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np
from plotly.colors import sample_colorscale

from klviz.views.plots import visible_token_text

DIVERGING = ("log_ratio", "k1")
CSS = ("font-family:monospace;font-size:15px;line-height:2.1;white-space:pre-wrap;"
       "overflow-wrap:anywhere;padding:4px 0")
TOKEN_CSS = "padding:2px 1px;border-radius:3px;margin:0 1px"
SELECTED_CSS = "outline:2px solid #000;outline-offset:1px"


def token_colors(values: Sequence[float], quantity: str) -> list[str]:
    """One "rgb(r, g, b)" per value: RdBu reversed around 0 for signed quantities, else Reds from 0."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if len(v) == 0:
        return []
    bound = float(np.abs(v).max()) or 1.0
    if quantity in DIVERGING:
        return sample_colorscale("RdBu_r", list(0.5 + 0.5 * v / bound))
    return sample_colorscale("Reds", list(np.clip(v / bound, 0.0, 1.0)))


def _ink(rgb: str) -> str:
    r, g, b = (int(x) for x in rgb[rgb.index("(") + 1:-1].split(","))
    return "#fff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else "#000"  # legible on dark fills


def token_html(tokens: Sequence[str], values: Sequence[float], quantity: str,
               selected: int | None = None, label: str | None = None) -> str:
    """A <div> of <span>s, one per token in order; `selected` (an index into tokens) is outlined.

    Each span's title (its hover) gives the index and the value of `quantity` (named by `label`).
    """
    name = html.escape(label or quantity)
    spans = []
    for i, (tok, value, color) in enumerate(zip(tokens, values, token_colors(values, quantity))):
        style = f"{TOKEN_CSS};background:{color};color:{_ink(color)}"
        if i == selected:
            style += f";{SELECTED_CSS}"
        text = html.escape(visible_token_text(str(tok)))
        br = "<br>" if "\n" in str(tok) else ""
        spans.append(f'<span title="token {i}: {name} {float(value):.4g}" style="{style}">{text}</span>{br}')
    return f'<div class="klviz-tokens" style="{CSS}">{"".join(spans)}</div>'
