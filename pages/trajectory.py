"""Trajectory: a checkpoint series (`klviz trajectory`) against training step: exact KL both ways per token
and per sequence, total variation, mass gained and lost per SFT-probability band (band x step), and the
response tokens whose probability moved most between consecutive checkpoints. Click a step to show its
rows on the other pages.

kl_reverse = KL(policy || SFT) = sum_v p log(p/q); kl_forward = KL(SFT || policy) = sum_v q log(q/p).
"""

import streamlit as st

from klviz.app import data
from klviz.app.feedback import plain
from klviz.app.keys import Keys
from klviz.app.view import current
from klviz.views import trajectory

st.title("Trajectory")
df = data.require_series()
f = data.trajectory_frames(df)
per = st.segmented_control("KL", ["token", "sequence"], default="token", required=True, key=Keys.TRAJ_PER,
                           format_func=lambda p: f"per {p}")
event = st.plotly_chart(trajectory.kl_by_step_figure(f["steps"], per), key=Keys.TRAJ_CHART,
                        on_select="rerun", selection_mode="points")
points = event.selection.points if event else []
if points:
    step = int(points[0]["x"])
    if step != current().step:
        data.point_at_step(step)
        st.rerun()
st.caption(plain(f"Showing step {current().step} on the other pages: click a point, or choose "
                    "the Checkpoint step in the sidebar."))
st.plotly_chart(trajectory.band_heatmap_figure(f["gained"], f["lost"]), key="trajectory.bands")
if still := trajectory.still_steps(f["gained"], f["lost"]):
    st.caption(f"Step {', '.join(map(str, still))}: no probability mass moved in any band (the policy scores exactly "
               "as the SFT model there), so its columns are white.")
st.subheader("Tokens whose probability moved most between consecutive checkpoints", anchor=False)
st.caption("p(y): the policy's probability of the response token at that position, at each checkpoint.")
st.dataframe(f["moved"], hide_index=True, use_container_width=True)
st.subheader("Every checkpoint's figures", anchor=False)
st.caption("Per checkpoint: its tokens shown, exact KL both ways per token and per sequence (nats), and total "
           "variation per token (0 to 1).")
st.dataframe(f["steps"], hide_index=True, use_container_width=True)
