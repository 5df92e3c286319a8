"""The HTML report is self-contained (plotly.js inlined once, nothing fetched) and escapes its text."""

import html
import re

import pandas as pd
import plotly.graph_objects as go

from klviz.views.report import REPORT_TABLE_ROWS, report_html

SCRIPT = "<script>alert(1)</script>"


def _report(n_figures=2, table_rows=3):
    figs = [(f"figure {i} {SCRIPT}", go.Figure(go.Bar(x=[1, 2], y=[3, 4]))) for i in range(n_figures)]
    table = pd.DataFrame({"token": [SCRIPT] * table_rows, "kl_reverse": [0.5] * table_rows})
    return report_html(f"klviz {SCRIPT}", figs, {"policy": SCRIPT, "sft <i>": "sample_data/sft"},
                       tables=[(f"tokens {SCRIPT}", table)])


def test_self_contained():
    out = _report()
    assert out.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc\s*=", out, flags=re.I)  # no CDN, no network
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", out, flags=re.I)
    # plotly.js is inlined once, however many figures there are.
    assert len(_report(n_figures=3)) - len(_report(n_figures=2)) < 20_000
    assert len(out) > 1_000_000  # the bundle itself is several MB
    assert out.count('id="klviz-figure-') == 2


def test_every_string_escaped():
    out = _report()
    assert out.count(SCRIPT) == 0
    esc = html.escape(SCRIPT)
    for where in ("<title>klviz " + esc, "<h1>klviz " + esc, "<h2>figure 0 " + esc,
                  "<h2>tokens " + esc, "<td>" + esc, "sft &lt;i&gt;"):
        assert where in out, where


def test_long_tables_are_cut():
    out = _report(table_rows=REPORT_TABLE_ROWS + 5)
    assert f"First {REPORT_TABLE_ROWS} of {REPORT_TABLE_ROWS + 5} rows" in out
    table = out[out.index("<h2>tokens"):]
    assert table.count("<td>" + html.escape(SCRIPT)) == REPORT_TABLE_ROWS


def test_raw_figure_text_cannot_end_the_script():
    fig = go.Figure(layout_title_text="</script><script>alert(1)</script>")
    out = report_html("t", [("a", fig)], {})
    figures = out[out.index("<section>"):]
    assert figures.count("</script>") == 1  # only the figure's own script element closes


def test_report_opens_with_headline_figures_and_units():
    head = {"n_sequences": 3, "kl_reverse_per_token": 1.25e-13, "kl_forward_per_sequence": 0.5}
    out = report_html("r", [("fig", go.Figure(go.Bar(x=[1], y=[2])))], {"policy": "p"}, headline=head)
    body = out[out.index("<body>"):]
    assert body.index("Headline figures") < body.index('class="meta"><tr><th>policy') < body.index("klviz-figure-0")
    assert "KL(policy || SFT) = sum_v p log(p/q), nats per token</th><td>1.25e-13<" in body
    assert "KL(SFT || policy), nats per sequence" in body and "<td>3</td>" in body
    assert "Headline figures" not in report_html("r", [], {})


def test_report_bytes_headline_is_the_tables():
    from klviz.views import tables
    from klviz.views.export import report_bytes
    from tests.unit.test_tables import build_table

    df = build_table()
    out = report_bytes("r", lambda: [], {"policy": "p"}, df).decode()
    want = tables.headline(df)["kl_reverse_per_token"]
    assert f"nats per token</th><td>{want:.6g}</td>" in out and out.index("Headline figures") < out.index("policy</th>")
