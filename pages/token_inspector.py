"""Token inspector: one response as tokens coloured by a chosen quantity; click a token to see where
that position's probability mass moved (the tokens gained and lost most, and log q against log p).

log_ratio = log p(y)/q(y) at the sampled token (p: policy, q: SFT); kl_reverse = KL(policy || SFT)
= sum_v p log(p/q); kl_forward = KL(SFT || policy) = sum_v q log(q/p); k1, k3 estimate kl_reverse.
"""

import streamlit as st

from klviz.views import plots, tables

from klviz.app import data
from klviz.app.feedback import plain
from klviz.app.keys import Keys
from klviz.prompts import prompt_text

QUANTITIES = ["log_ratio", "kl_reverse", "kl_forward", "k1", "k3"]
LABELS = {**plots.QUANTITY_LABELS, "logp_policy": "log p(y), policy", "logp_sft": "log q(y), SFT"}

st.title("Token inspector")
df = data.require_table()
texts = {str(p.id): prompt_text(p) for p in data.prompts()}

sources = data.sources_of(df)
cols = st.columns([1, 3, 1, 2] if len(sources) > 1 else [3, 1, 2])
source = cols[0].selectbox("Samples from", sources, key=Keys.INSPECT_SOURCE) if len(sources) > 1 else None
mid, right, far = cols[-3:]
rows = df[df["source"] == source] if source else df
prompt_ids = list(dict.fromkeys(rows["prompt_id"]))
prompt_id = mid.selectbox("Prompt", prompt_ids, key=Keys.INSPECT_PROMPT,
                          format_func=lambda i: f"{i}: {texts.get(i, '')}")
rows = rows[rows["prompt_id"] == prompt_id]
sample_id = right.selectbox("Sample", list(dict.fromkeys(rows["sample_id"])), key=Keys.INSPECT_SAMPLE)
quantity = far.selectbox("Colour by", QUANTITIES, key=Keys.INSPECT_QUANTITY,
                         format_func=lambda q: plots.QUANTITY_LABELS.get(q, q))
tokens = rows[rows["sample_id"] == sample_id].sort_values("position").reset_index(drop=True)

st.text(f"Prompt: {texts.get(prompt_id, '')}")
st.caption("Whitespace is drawn visible: · space, ↵ newline, → tab. Click a token to inspect it.")
strip = plots.token_strip_figure(tokens, quantity)
event = st.plotly_chart(strip, key=Keys.INSPECT_STRIP, on_select="rerun", selection_mode="points")
points = event.selection.points if event else []
clicked = [int(p["point_index"]) for p in points if int(p["point_index"]) < len(tokens)]
chosen = clicked[0] if clicked else int(tokens["kl_reverse"].idxmax())
row = tokens.iloc[chosen]
st.subheader(plain(f"Position {int(row['position'])}: {plots.visible_token_text(row['token'])!r}"
                      + ("" if clicked else " (the largest KL(policy || SFT); click any token)")),
             anchor=False)
cols = st.columns(6)
for col, name in zip(cols, ["logp_policy", "logp_sft", "log_ratio", "kl_reverse", "kl_forward", "k3"]):
    col.metric(LABELS[name], f"{row[name]:.4f}")
detail = tables.position_detail(row, data.decoder())
left, right = st.columns(2)
left.plotly_chart(plots.position_detail_figure(detail), key="inspect.detail")
right.plotly_chart(plots.logq_vs_logp_figure(detail), key="inspect.logq_logp")
