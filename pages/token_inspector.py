"""Token inspector: one response as wrapped text, each token's background coloured by a chosen
quantity; pick a token to see where that position's probability mass moved (the tokens gained and
lost most, and log q against log p).

log_ratio = log p(y)/q(y) at the sampled token (p: policy, q: SFT); kl_reverse = KL(policy || SFT)
= sum_v p log(p/q); kl_forward = KL(SFT || policy) = sum_v q log(q/p); k1, k3 estimate kl_reverse.
"""

import streamlit as st

from klviz.views import plots, tables, token_text

from klviz.app import data
from klviz.app.feedback import plain
from klviz.app.keys import Keys
from klviz.prompts import prompt_text

QUANTITIES = ["log_ratio", "kl_reverse", "kl_forward", "k1", "k3"]
LABELS = {**plots.QUANTITY_LABELS, "logp_policy": "log p(y), policy", "logp_sft": "log q(y), SFT"}
UNITS = {"logp_policy": "nats", "logp_sft": "nats", "log_ratio": "nats", "kl_reverse": "nats",
         "kl_forward": "nats", "k3": "nats"}

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

# Which token: one asked for by another page (Where RL acted), else the one picked, else the largest KL.
positions = [int(p) for p in tokens["position"]]
largest = int(tokens["kl_reverse"].idxmax())
asked = st.session_state.pop(Keys.INSPECT_POSITION, None)
response = (source, prompt_id, sample_id)
if asked in positions:
    st.session_state[Keys.INSPECT_TOKEN] = positions.index(asked)
elif st.session_state.get(Keys.INSPECT_RESPONSE) != response or Keys.INSPECT_TOKEN not in st.session_state:
    st.session_state[Keys.INSPECT_TOKEN] = largest  # a new response: start at its largest KL(policy || SFT)
st.session_state[Keys.INSPECT_RESPONSE] = response

st.text(f"Prompt: {texts.get(prompt_id, '')}")
chosen = st.session_state[Keys.INSPECT_TOKEN]
st.html(token_text.token_html(list(tokens["token"]), tokens[quantity].to_numpy(), quantity, selected=chosen,
                              label=plots.QUANTITY_LABELS.get(quantity, quantity)))
st.caption("Whitespace is drawn visible: · space, ↵ newline, → tab. Hover a token for its value; "
           "pick one below to inspect it (outlined).")
chosen = st.select_slider("Token", options=list(range(len(tokens))), key=Keys.INSPECT_TOKEN,
                          format_func=lambda i: f"{positions[i]}: {plots.visible_token_text(tokens['token'][i])}")
row = tokens.iloc[chosen]
st.subheader(plain(f"Position {int(row['position'])}: {plots.visible_token_text(row['token'])!r}"
                   + (" (the largest KL(policy || SFT))" if chosen == largest else "")), anchor=False)
# Two rows of three: six figures with their units in one row were cut off at 1280 px.
for names in (["logp_policy", "logp_sft", "log_ratio"], ["kl_reverse", "kl_forward", "k3"]):
    for col, name in zip(st.columns(3), names):
        col.metric(LABELS[name], f"{row[name]:.4f} {UNITS[name]}")
detail = tables.position_detail(row, data.decoder())
left, right = st.columns(2)
left.plotly_chart(plots.position_detail_figure(detail), key="inspect.detail")
right.plotly_chart(plots.logq_vs_logp_figure(detail), key="inspect.logq_logp")
