"""Mass shift: over all samples, where the policy's probability mass moved relative to the SFT model.

Mass gained (p > q) against mass lost (q > p) per SFT-probability band, each band's share of
KL(policy || SFT) = sum_v p log(p/q) and KL(SFT || policy) = sum_v q log(q/p), p against q for the
top tokens, the tokens most gained and lost, the KL profile by position, and sequence-level KL.
The headline chart is always drawn; the other five are tabs, and only the open one is built and drawn.
"""

import streamlit as st

from klviz.views import plots

from klviz.app import data
from klviz.app.downloads import downloads
from klviz.app.keys import Keys
from klviz.app.tabs import open_tab

LABELS = {"policy": "Policy samples", "sft": "SFT samples", "both": "Both"}
VIEW_CAPTIONS = {
    "KL by band": "Each SFT-probability band's share of KL(policy || SFT) and of KL(SFT || policy), per token: "
                  "the reverse KL is charged where the policy put mass on tokens with small q, the forward KL "
                  "where it took mass from tokens with large q.",
    "SFT vs policy probability": "log10 q(v) (SFT) against log10 p(v) (policy) for the top tokens of every position "
                                 "(Scattergl): above the diagonal the policy gained mass, below it lost mass.",
    "Tokens most gained and lost": "Summed over every position, by token text: p log(p/q) (the token's share of "
                                   "KL(policy || SFT)) and q log(q/p) (its share of KL(SFT || policy)).",
    "KL by position": "Mean exact KL per token both ways by response position, with the k1 and k3 estimates "
                      "of KL(policy || SFT) from the sampled tokens.",
    "Sequence-level KL": "Per response: the sum of exact per-token KL(policy || SFT) against the sums of k1 and k3. "
                         "A k1 sum can be negative; KL never is.",
}

st.title("Mass shift")
df = data.require_table()
options = data.shift_choices(df)
choice = st.segmented_control("Samples", options, default=options[-1] if options else None, required=True,
                              format_func=lambda s: LABELS.get(s, f"{s} samples"), key=Keys.SHIFT_SOURCE)
if len(options) > 1:
    st.caption("Policy samples show the contexts the policy writes (where it went); SFT samples show "
               "the SFT model's own contexts (what the policy left behind).")
rows = data.shift_rows(df, choice)
f = data.mass_shift(rows, choice)  # klviz.views.tables.mass_shift, cached per table and choice
figures = {
    "Mass moved": lambda: plots.mass_moved_figure(f["bands"]),
    "KL by band": lambda: plots.kl_by_band_figure(f["bands"]),
    "SFT vs policy probability": lambda: plots.prob_scatter_figure(f["points"]),
    "Tokens most gained and lost": lambda: plots.token_shift_figure(f["gained"], f["lost"]),
    "KL by position": lambda: plots.position_profile_figure(f["profile"]),
    "Sequence-level KL": lambda: plots.sequence_kl_figure(f["per_sequence"]),
}
headline, *views = figures
st.plotly_chart(figures[headline](), key=f"shift.{headline}")
# One view at a time: only the open tab's chart is built and drawn (page switch times: bench/RESULTS.md);
# the HTML report holds all six.
name, tab = open_tab(views, Keys.SHIFT_VIEW)
tab.caption(VIEW_CAPTIONS[name])
tab.plotly_chart(figures[name](), key=f"shift.{name}")
downloads(rows, "klviz mass shift", lambda: [(name, build()) for name, build in figures.items()])
