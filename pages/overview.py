"""Overview: headline figures (exact KL both ways, per token and per sequence; total variation;
reward when one is chosen) and the mass-moved chart, for the pair and samples in the sidebar.

KL(policy || SFT) = sum_v p log(p/q) is the reverse KL (InstructGPT's penalty); KL(SFT || policy) =
sum_v q log(q/p) the forward KL.
"""

import streamlit as st

from klviz.views import plots

from klviz.app import guard, ui
from klviz.views.plots import KL_FORWARD, KL_REVERSE

st.title("Overview")
head, bands = ui.overview()  # on the default view: from the shipped view, before pandas has loaded
st.caption(ui.plain(f"{ui.current().source.label}: {head['n_sequences']} responses, "
                    f"{head['n_tokens']} tokens, sampled from {ui.current().settings.sample_from}."))

figures, chart = st.container(), st.container()
# The chart is sent first (it shows below the figures): the browser starts loading plotly.js sooner.
chart.plotly_chart(plots.mass_moved_figure(bands), key="overview.mass_moved")

cols = figures.columns(5)
cols[0].metric(f"{KL_REVERSE} per token", f"{head['kl_reverse_per_token']:.4f}",
               help="Exact: summed over the whole vocabulary at every response position, in nats.")
cols[1].metric(f"{KL_FORWARD} per token", f"{head['kl_forward_per_token']:.4f}")
cols[2].metric(f"{KL_REVERSE} per sequence", f"{head['kl_reverse_per_sequence']:.3f}",
               help="Mean over responses of the summed per-token exact KL.")
cols[3].metric(f"{KL_FORWARD} per sequence", f"{head['kl_forward_per_sequence']:.3f}")
cols[4].metric("Total variation per token", f"{head['tv_per_token']:.4f}",
               help="Half the L1 distance: the mass gained, which equals the mass lost.")
ui.headline_only()  # a new session's first run ends here; the sidebar and the rest follow 1.5 s later

reward_name = figures.selectbox("Reward", ["(none)", "sentiment", "length", "other…"],
                               key=ui.Keys.OVERVIEW_REWARD,
                               help="Score the sampled responses with a reward from klviz.ppo.rewards.")
if reward_name == "other…":
    reward_name = figures.text_input("Reward name", placeholder="keyword:WORD, module:function or a folder",
                                     key=ui.Keys.OVERVIEW_REWARD_OTHER)
    with figures:
        guard.reward_note()
if reward_name and reward_name != "(none)":
    with ui.user_errors():
        rewards = ui.mean_rewards(ui.require_table(), reward_name)
        for col, (source, value) in zip(figures.columns(max(len(rewards), 1)), rewards.items()):
            col.metric(ui.plain(f"Mean reward ({reward_name}), {source} samples"), f"{value:.3f}")

ui.downloads(ui.table_later(), "klviz overview", lambda: [("Mass moved", plots.mass_moved_figure(bands)),
                                            ("KL by band", plots.kl_by_band_figure(bands))])
