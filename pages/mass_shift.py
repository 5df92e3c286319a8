"""Mass shift: over all samples, where the policy's probability mass moved relative to the SFT model.

Mass gained (p > q) against mass lost (q > p) per SFT-probability band, each band's share of
KL(policy || SFT) = sum_v p log(p/q) and KL(SFT || policy) = sum_v q log(q/p), p against q for the
top tokens, the tokens most gained and lost, the KL profile by position, and sequence-level KL.
"""

import streamlit as st

from klviz import plots, ui

LABELS = {"policy": "Policy samples", "sft": "SFT samples", "both": "Both"}

st.title("Mass shift")
df = ui.require_table()
pair = ui.require_pair()
options = ui.shift_choices(df)
choice = st.segmented_control("Samples", options, default=options[-1] if options else None, required=True,
                              format_func=lambda s: LABELS.get(s, f"{s} samples"), key=ui.Keys.SHIFT_SOURCE)
if len(options) > 1:
    st.caption("Policy samples show the contexts the policy writes (where it went); SFT samples show "
               "the SFT model's own contexts (what the policy left behind).")
rows = ui.shift_rows(df, choice)
f = ui.mass_shift(rows, choice, pair)  # klviz.tables.mass_shift, cached per table and choice
figures = {
    "Mass moved": lambda: plots.mass_moved_figure(f["bands"]),
    "KL by band": lambda: plots.kl_by_band_figure(f["bands"]),
    "SFT vs policy probability": lambda: plots.prob_scatter_figure(f["points"]),
    "Tokens most gained and lost": lambda: plots.token_shift_figure(f["gained"], f["lost"]),
    "KL by position": lambda: plots.position_profile_figure(f["profile"]),
    "Sequence-level KL": lambda: plots.sequence_kl_figure(f["per_sequence"]),
}
places = [st.container(), *st.columns(2), st.container(), *st.columns(2)]
for (name, build), place in zip(figures.items(), places):
    place.plotly_chart(build(), key=f"shift.{name}")
ui.downloads(rows, "klviz mass shift", lambda: [(name, build()) for name, build in figures.items()])
