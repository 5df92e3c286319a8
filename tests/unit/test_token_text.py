"""The Token inspector's coloured text: every token once, in order, escaped once, whitespace visible."""

import html
import re

import numpy as np

from klviz.views import token_text

SCRIPT = "<script>alert(1)</script>"


def _spans(out):
    return re.findall(r'<span title="([^"]*)" style="([^"]*)">(.*?)</span>', out)


def test_every_token_once_in_order_escaped_once():
    toks = [SCRIPT, " ", "a&b", "\n", "x\t"]
    out = token_text.token_html(toks, [0.0, 1.0, 2.0, 3.0, 4.0], "kl_reverse", selected=2, label="KL(policy || SFT)")
    spans = _spans(out)
    assert [s[2] for s in spans] == [html.escape(SCRIPT), "·", "a&amp;b", "↵", "x→"]
    assert "<script>" not in out and "&amp;lt;" not in out  # escaped exactly once
    assert out.count("<br>") == 1 and out.index("↵</span><br>") > 0  # a newline token ends its line
    assert [token_text.SELECTED_CSS in s[1] for s in spans] == [False, False, True, False, False]
    assert spans[4][0] == "token 4: KL(policy || SFT) 4"
    assert "white-space:pre-wrap" in out


def test_colours_follow_the_value():
    seq = token_text.token_colors([0.0, 0.5, 1.0], "kl_reverse")
    assert seq[0] == "rgb(255, 245, 240)" and seq[-1] == "rgb(103, 0, 13)"  # Reds: white to dark red
    div = token_text.token_colors([-2.0, 0.0, 2.0], "log_ratio")
    assert div[0] != div[2] and div[0] == token_text.token_colors([-1.0, 1.0], "log_ratio")[0]
    assert token_text.token_colors([np.nan, 1.0], "k3")[0] == seq[0]  # NaN drawn as 0
    assert token_text.token_colors([], "k3") == [] and token_text.token_html([], [], "k3").endswith("</div>")
    dark = token_text.token_html(["a"], [1.0], "kl_reverse")
    assert "color:#fff" in dark
