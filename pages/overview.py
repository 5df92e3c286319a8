"""Overview: headline figures (exact KL both ways, per token and per sequence; total variation;
reward when one is chosen) and the mass-moved chart, for the pair and samples in the sidebar.

KL(policy || SFT) = sum_v p log(p/q) is the reverse KL (InstructGPT's penalty); KL(SFT || policy) =
sum_v q log(q/p) the forward KL.
"""

import streamlit as st

from klviz.views import plots, svg

from klviz.app import data, first_view, guard
from klviz.app.downloads import downloads, table_later
from klviz.app.feedback import plain, user_errors
from klviz.app.keys import Keys
from klviz.views.style import KL_FORWARD, KL_REVERSE

st.title("Overview")
head, bands = data.overview()  # on the default view: from the shipped view, before pandas has loaded
st.caption(plain(data.view_caption(head)))

figures, chart, reward = st.container(), st.container(), st.container()
# The chart is sent first (it shows below the figures): the browser starts loading plotly.js sooner. A new
# session's first run sends it as a static image instead, drawn at once; the next run, ~1.3 s later, puts
# the interactive chart in its place (klviz.views.svg, klviz/app/first_view.py).
if first_view.first_paint():
    chart.image(svg.mass_moved_svg(bands), width="stretch", alt=svg.ALT)
else:
    chart.plotly_chart(plots.mass_moved_figure(bands), key="overview.mass_moved")

# Two rows of three, per token and per sequence: five in one row cut every label's unit at 1280 px.
cols = figures.columns(3)
cols[0].metric(f"{KL_REVERSE}, nats per token", f"{head['kl_reverse_per_token']:.4f}",
               help="Exact: summed over the whole vocabulary at every response position, in nats.")
cols[1].metric(f"{KL_FORWARD}, nats per token", f"{head['kl_forward_per_token']:.4f}")
cols[2].metric("Total variation per token (0 to 1)", f"{head['tv_per_token']:.4f}",
               help="Half the L1 distance: the mass gained, which equals the mass lost.")
cols = figures.columns(3)
cols[0].metric(f"{KL_REVERSE}, nats per sequence", f"{head['kl_reverse_per_sequence']:.3f}",
               help="Mean over responses of the summed per-token exact KL.")
cols[1].metric(f"{KL_FORWARD}, nats per sequence", f"{head['kl_forward_per_sequence']:.3f}")
# A new session's first run ends here, after the figures and the chart; the rest follows (klviz/app/first_view.py).
# The reward box sits below the chart, so it moves nothing when it comes: drawn in the first run, its ~20 lazily
# loaded script chunks held the image back by ~0.4 s in a cold browser (bench/RESULTS.md).
first_view.headline_only()
reward_name = reward.selectbox("Reward", ["(none)", "sentiment", "length", "other…"], key=Keys.OVERVIEW_REWARD,
                               help="Score the sampled responses with a reward from klviz.ppo.rewards.")
if reward_name == "other…":
    reward_name = reward.text_input("Reward name", placeholder="keyword:WORD, module:function or a folder",
                                    key=Keys.OVERVIEW_REWARD_OTHER)
    with reward:
        guard.reward_note()
if reward_name and reward_name != "(none)":
    with user_errors():
        rewards = data.mean_rewards(data.require_table(), reward_name)
        for col, (source, value) in zip(reward.columns(max(len(rewards), 1)), rewards.items()):
            col.metric(plain(f"Mean reward ({reward_name}), {source} samples"), f"{value:.3f}")

downloads(table_later(), "klviz overview", lambda: [("Mass moved", plots.mass_moved_figure(bands)),
                                            ("KL by band", plots.kl_by_band_figure(bands))])
