"""A self-contained HTML report of the current charts, for sharing after a review.

plotly.js is inlined once (no CDN, no network); each figure is a div drawn by it. Every title, meta
and table string is html-escaped. Figures from klviz.views.plots already escape token text and state each
KL's direction: KL(policy || SFT) = sum_v p log(p/q), KL(SFT || policy) = sum_v q log(q/p).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Iterable, Mapping

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

if TYPE_CHECKING:
    import pandas as pd

REPORT_TABLE_ROWS = 200  # a report is for reading; the full token table is its own download
FIGURE_CONFIG = {"displaylogo": False, "responsive": True}
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em}
table.meta td,table.meta th{text-align:left;padding:2px 12px 2px 0}
table.dataframe{border-collapse:collapse;font-size:.85em}
table.dataframe td,table.dataframe th{border:1px solid #ddd;padding:2px 6px}"""


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


# The headline figures (klviz.views.tables.headline), each with its unit and KL direction.
HEADLINE_LABELS = {
    "kl_reverse_per_token": "KL(policy || SFT) = sum_v p log(p/q), nats per token",
    "kl_forward_per_token": "KL(SFT || policy) = sum_v q log(q/p), nats per token",
    "kl_reverse_per_sequence": "KL(policy || SFT), nats per sequence (summed over its tokens)",
    "kl_forward_per_sequence": "KL(SFT || policy), nats per sequence (summed over its tokens)",
    "tv_per_token": "total variation 1/2 sum_v |p - q|, per token (probability, 0 to 1)",
    "k1_per_sequence": "k1 estimate of KL(policy || SFT), nats per sequence",
    "k3_per_sequence": "k3 estimate of KL(policy || SFT), nats per sequence",
    "n_sequences": "responses",
    "n_tokens": "response tokens",
}


def _number(v) -> str:
    return str(v) if isinstance(v, int) else f"{float(v):.6g}"  # never an SI suffix


def _headline_html(headline: Mapping[str, float]) -> str:
    rows = "".join(f"<tr><th>{_esc(HEADLINE_LABELS.get(k, k))}</th><td>{_esc(_number(v))}</td></tr>"
                   for k, v in headline.items())
    return f'<section><h2>Headline figures</h2><table class="meta headline">{rows}</table></section>'


def _meta_html(meta: Mapping[str, str]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in meta.items())
    return f'<table class="meta">{rows}</table>'


def _figure_html(title: str, fig: go.Figure, i: int) -> str:
    div = fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                      config=FIGURE_CONFIG, div_id=f"klviz-figure-{i}")
    return f"<section><h2>{_esc(title)}</h2>{div}</section>"


def _table_html(title: str, df: pd.DataFrame) -> str:
    note = ""
    if len(df) > REPORT_TABLE_ROWS:
        note = f"<p>First {REPORT_TABLE_ROWS} of {len(df)} rows.</p>"
    body = df.head(REPORT_TABLE_ROWS).to_html(index=False, escape=True, border=0,
                                              float_format=lambda x: f"{x:.6g}")
    return f"<section><h2>{_esc(title)}</h2>{note}{body}</section>"


def report_html(title: str, figures: list[tuple[str, go.Figure]], meta: dict[str, str],
                tables: Iterable[tuple[str, pd.DataFrame]] = (),
                headline: Mapping[str, float] | None = None) -> str:
    """One self-contained HTML page: title, the headline figures (tables.headline, with units),
    meta as a key/value table, the figures, the tables.

    plotly.js is inlined once in a <script> without src, so the file opens offline.
    """
    # "</script" must not occur inside the bundle's text, or it would end the element early.
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{CSS}</style>",
        f'<script type="text/javascript">{plotly_js}</script>',
        f"</head><body><h1>{_esc(title)}</h1>",
        _headline_html(headline) if headline else "", _meta_html(meta),
    ]
    parts += [_figure_html(t, fig, i) for i, (t, fig) in enumerate(figures)]
    parts += [_table_html(t, df) for t, df in tables]
    parts.append("</body></html>")
    return "\n".join(parts)
