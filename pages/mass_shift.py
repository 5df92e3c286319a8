"""Mass shift: over all samples, where the policy's probability mass moved relative to the SFT model.

Mass gained (p > q) against mass lost (q > p) per SFT-probability band, each band's share of
KL(policy || SFT) = sum_v p log(p/q) and KL(SFT || policy) = sum_v q log(q/p), p against q for the
top tokens, the tokens most gained and lost, the KL profile by position, and sequence-level KL.
"""

import streamlit as st

from klviz import plots, tables, ui

SCATTER_POINTS = 4000  # the largest contributions; more only slows the browser down
TOP_TOKENS = 20
LABELS = {"policy": "Policy samples", "sft": "SFT samples", "both": "Both"}

st.title("Mass shift")
df = ui.require_table()
decode = ui.decoder(ui.require_pair())
sources = ui.sources_of(df)
options = sources + (["both"] if len(sources) > 1 else [])
choice = st.segmented_control("Samples", options, default=options[-1] if options else None, required=True,
                              format_func=lambda s: LABELS.get(s, f"{s} samples"), key=ui.Keys.SHIFT_SOURCE)
rows = df if choice in (None, "both") else df[df["source"] == choice]
if len(sources) > 1:
    st.caption("Policy samples show the contexts the policy writes (where it went); SFT samples show "
               "the SFT model's own contexts (what the policy left behind).")
bands = tables.band_totals(rows)
# Each figure is built just before it is drawn, so the headline shows first; the report rebuilds them.
figures = {
    "Mass moved": lambda: plots.mass_moved_figure(bands),
    "KL by band": lambda: plots.kl_by_band_figure(bands),
    "SFT vs policy probability": lambda: plots.prob_scatter_figure(
        tables.top_token_points(rows, decode, max_points=SCATTER_POINTS)),
    "Tokens most gained and lost": lambda: plots.token_shift_figure(*tables.token_shift(rows, decode, TOP_TOKENS)),
    "KL by position": lambda: plots.position_profile_figure(tables.position_profile(rows)),
    "Sequence-level KL": lambda: plots.sequence_kl_figure(tables.per_sequence(rows)),
}
places = [st.container(), *st.columns(2), st.container(), *st.columns(2)]
for (name, build), place in zip(figures.items(), places):
    place.plotly_chart(build(), key=f"shift.{name}")
ui.downloads(rows, "klviz mass shift", lambda: [(name, build()) for name, build in figures.items()])
