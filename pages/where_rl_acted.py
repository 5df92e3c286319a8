"""Where RL acted: which sampled tokens left the SFT model's top choices (token shift, Lin et al.
2023), how much of each KL sits at the high-entropy forking positions (Wang et al. 2025), the exact
entropy change against its first-order prediction (Cui et al. 2025), the largest-KL positions with
their context (one click opens them in the Token inspector), and on SFT samples the mean
per-response KL(SFT || policy), RL's Razor's forgetting predictor (Shenfeld et al. 2025).

KL(policy || SFT) = sum_v p log(p/q); KL(SFT || policy) = sum_v q log(q/p). Definitions: klviz.views.acted.
"""

import streamlit as st

from klviz.views import acted_plots
from klviz.views.plots import KL_FORWARD, KL_REVERSE

from klviz.app import data
from klviz.app.keys import Keys
from klviz.app.tabs import open_tab
from klviz.app.view import current

LABELS = {"policy": "Policy samples", "sft": "SFT samples", "both": "Both"}
SPIKE_COLUMNS = {"source": "samples from", "kl_reverse": f"{KL_REVERSE}, nats", "kl_forward": f"{KL_FORWARD}, nats",
                 "before": "context before", "token": "token", "after": "context after",
                 "prompt_id": "prompt", "sample_id": "sample", "position": "position"}

st.title("Where RL acted")
df = data.require_table()
options = data.shift_choices(df)
choice = st.segmented_control("Samples", options, default=options[-1], required=True, key=Keys.ACTED_SOURCE,
                              format_func=lambda s: LABELS.get(s, f"{s} samples")) if options else None
a = data.where_rl_acted(df, choice)  # klviz.views.acted.where_rl_acted, cached per table and choice

st.subheader("Token shift", anchor=False)
st.caption("Each policy-sampled token by its rank under the SFT model (Lin et al. 2023, URIAL): unshifted "
           "if the SFT model ranks it first, marginal if second or third, shifted if lower.")
shift = a["token_shift"]
policy_samples = shift["unshifted"] == shift["unshifted"]  # not NaN: there are policy samples in view
if policy_samples:
    for col, name in zip(st.columns(3), ("unshifted", "marginal", "shifted")):
        col.metric(acted_plots.SHIFT_NAMES[name], f"{shift[name]:.1%}", help="of the policy-sampled tokens shown")
else:
    st.info("No policy-sampled tokens in view: token shift counts the policy's own choices.")

st.subheader("Forking positions and entropy", anchor=False)
f, e = a["forking"], a["entropy"]
st.caption(f"Forking positions: the top 20% of the positions shown by SFT entropy (Wang et al. 2025), "
           f"{f['n_forking']} of {f['n_rows']}, and their share of each summed KL against their 20% of tokens.")
cols = st.columns(4)
cols[0].metric("SFT entropy threshold", f"{f['entropy_sft_threshold']:.3f} nats")
cols[1].metric(f"Share of {KL_REVERSE}", f"{f['share_kl_reverse']:.1%}")
cols[2].metric(f"Share of {KL_FORWARD}", f"{f['share_kl_forward']:.1%}")
cols[3].metric("Also in the policy's top 20%", f"{f['overlap']:.1%}",
               help="The fraction of these positions that are also among the top 20% by the policy's entropy.")
cols = st.columns(3)
cols[0].metric("Exact entropy change, nats per token", f"{e['exact_change_mean']:.4f}",
               help="H(policy) − H(SFT) per position, the mean over the positions shown.")
cols[1].metric("First-order prediction, nats per token", f"{e['first_order_change_mean']:.4f}",
               help="−Cov_q(log q, log p − log q) per position (Cui et al. 2025), the mean over the positions shown.")
cols[2].metric("Correlation, exact against first order", f"{e['correlation']:.3f}", help="Pearson, over positions.")

figures = {
    "Token shift by position": lambda: acted_plots.shift_by_position_figure(a["shift_by_position"]),
    "Most shifted tokens": lambda: acted_plots.most_shifted_figure(a["most_shifted"]),
    "Forking positions' share of KL": lambda: acted_plots.forking_figure(f),
    "Entropy change per token": lambda: acted_plots.entropy_scatter_figure(e["exact"], e["first_order"],
                                                                          e["correlation"]),
}
if not policy_samples:  # token shift counts the policy's own choices: no chart of it without them
    figures = {k: v for k, v in figures.items() if k not in ("Token shift by position", "Most shifted tokens")}
# One chart at a time, like Mass shift: only the open tab's chart is built and drawn.
name, tab = open_tab(list(figures), Keys.ACTED_VIEW)
tab.plotly_chart(figures[name](), key=f"acted.{name}")

st.subheader("Largest KL positions", anchor=False)
st.caption("The positions with the largest KL in either direction, with ten tokens either side. "
           "Click a row to open it in the Token inspector.")
spikes = a["spikes"]
event = st.dataframe(spikes[[c for c in SPIKE_COLUMNS if c in spikes]].rename(columns=SPIKE_COLUMNS),
                     hide_index=True, on_select="rerun", selection_mode="single-row", key=Keys.ACTED_SPIKES,
                     column_config={SPIKE_COLUMNS["kl_reverse"]: st.column_config.NumberColumn(format="%.4g"),
                                    SPIKE_COLUMNS["kl_forward"]: st.column_config.NumberColumn(format="%.4g")})
picked = event.selection.rows if event else []
if picked:  # open the Token inspector at that response and position
    row = spikes.iloc[picked[0]]
    st.session_state.update({Keys.INSPECT_SOURCE: row["source"], Keys.INSPECT_PROMPT: row["prompt_id"],
                             Keys.INSPECT_SAMPLE: row["sample_id"], Keys.INSPECT_POSITION: int(row["position"])})
    st.switch_page("pages/token_inspector.py")

st.subheader("RL's Razor", anchor=False)
razor = a["razor"]
if razor["n_sequences"]:
    st.metric(f"Mean {KL_FORWARD} per SFT-sampled response", f"{razor['kl_forward_per_sequence']:.3f} nats per sequence",
              help=f"Over {razor['n_sequences']} responses sampled from the SFT model.")
    st.caption("RL's Razor (Shenfeld et al. 2025) found this forward KL, measured on the SFT model's own "
               "samples, to predict how much a fine-tuned model forgets.")
else:
    st.info("RL's Razor reads SFT samples: " + (
        "this table has none (`klviz analyze --sample-from sft` or `both` makes a table with them)."
        if current().table is not None else "choose \"SFT\" or \"both\" under Sample from in the sidebar."))
