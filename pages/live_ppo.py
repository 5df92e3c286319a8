"""Live PPO: train a copy of the SFT model with the mini PPO in a background job and watch it drift.

Curves per step (reward, exact KL(policy || SFT) = sum_v p log(p/q) and KL(SFT || policy) =
sum_v q log(q/p), the chosen estimate, beta) and the mass moved by the current policy, refreshed by
a fragment that only polls the job's snapshots while it runs (drawn as images meanwhile, klviz.views.svg;
interactive once no run trains, or with the toggle). Up to four runs are overlaid.
"""

import streamlit as st

from klviz.views import plots, svg

from klviz.app import data, guard, runs
from klviz.app.feedback import plain, show_error, user_errors
from klviz.app.keys import Keys
from klviz.app.view import current
from klviz.ppo.config import PPOConfig
from klviz.ppo.losses import ESTIMATOR_METRIC

PLACEMENTS = {"reward": "in the reward (InstructGPT)", "loss": "in the loss (GRPO)", "none": "none"}

st.title("Live PPO")
pair = data.require_pair()
book = runs.runbook()
flash = st.session_state.pop(Keys.PPO_FLASH, None)
if flash:
    st.success(plain(flash))
    st.page_link("pages/overview.py", label="Inspect the saved policy on the Overview", icon=":material/arrow_forward:")

with st.container(border=True):
    c = st.columns([1, 1.4, 1, 1])  # the placement names are the longest: not cut at 1280 px
    reward = c[0].selectbox("Reward", ["sentiment", "length", "keyword:delicious"], key=Keys.PPO_REWARD,
                            accept_new_options=True,
                            help="sentiment, length, keyword:WORD; module:function or a reward-model folder "
                                 "only if the dashboard was started with --allow-code")
    placement = c[1].selectbox("KL placement", list(PLACEMENTS), format_func=PLACEMENTS.get, key=Keys.PPO_PLACEMENT)
    estimator = c[2].selectbox("KL estimator", list(ESTIMATOR_METRIC), key=Keys.PPO_ESTIMATOR)
    beta = c[3].number_input("beta (KL coefficient)", 0.0, 10.0, 0.05, 0.01, format="%.3f", key=Keys.PPO_BETA)
    c = st.columns(5)
    lr_default, n_trainable = runs.default_lr()
    lr = c[0].number_input("Learning rate", 1e-7, 1e-1, value=None, format="%.1e", key=Keys.PPO_LR,
                           placeholder=f"{lr_default:.1e}",
                           help=f"Empty: {lr_default:.1e}, scaled to the model's size ({n_trainable:,} trainable "
                                "parameters): 3e-4 x min(1, 1M / parameters), as `klviz ppo`. A rate tuned on a "
                                "small model collapses a large one in a step.")
    steps = c[1].number_input("Steps", 1, 2000, 40, key=Keys.PPO_STEPS)
    batch = c[2].number_input("Batch size", 2, 512, 32, key=Keys.PPO_BATCH)
    max_new = c[3].number_input("Max new tokens", 1, 512, PPOConfig.max_new_tokens, key=Keys.PPO_MAX_NEW)
    adaptive = c[4].checkbox("Adaptive beta", key=Keys.PPO_ADAPTIVE,
                             help="Adapt beta toward the target KL below (Ziegler et al. 2019).")
    target = c[4].number_input("Target KL (nats per response)", 0.01, 100.0, 2.0, key=Keys.PPO_TARGET,
                               disabled=not adaptive)
    lr = float(lr) if lr is not None else lr_default
    guess = runs.estimate(int(steps), int(batch), int(max_new))
    st.caption(plain(f"Learning rate {lr:.1e}" + (" (scaled to the model's size)" if lr == lr_default else "")
                     + (f" · {guess.describe()} on {pair.device}, measured from one forward pass of this model"
                        if guess else " · Estimated run time: once the pair's analysis has timed one forward "
                                      "pass of this model (its worker does, before sampling)")))
    guard.reward_note()
    start_from = st.radio("Start from", ["SFT model", "the pair's policy"], horizontal=True, key=Keys.PPO_FROM)

running = book.any_running()
b = st.columns([1, 1, 1.6, 3.4])  # room for "Save policy" at 1280 px
if b[0].button("Start", type="primary", disabled=running, icon=":material/play_arrow:"):
    with user_errors():
        cfg = PPOConfig(reward=reward or "", steps=int(steps), batch_size=int(batch), kl_placement=placement,
                        kl_estimator=estimator, kl_coef=float(beta), target_kl=float(target) if adaptive else None,
                        max_new_tokens=int(max_new), lr=lr, minibatches=min(4, int(batch)), bands_every=1)
        runs.start_run(cfg, start_from_policy=start_from != "SFT model")
        st.rerun()
if b[1].button("Stop", disabled=not running, icon=":material/stop:"):
    book.stop_all()
    st.rerun()
latest = book.latest()
if b[2].button("Save policy", disabled=latest is None, icon=":material/save:"):
    with user_errors():
        saved = runs.save_run(latest)
        st.session_state[Keys.PPO_FLASH] = (f"Saved the policy of run {latest.name}. It is now the sidebar's "
                                            f"pair ({saved.label}).")  # no server path on the page
        st.rerun()
interactive = b[3].toggle("Interactive charts while training", key=Keys.PPO_INTERACTIVE,
                          help="Off: while a run trains its charts are images, redrawn every "
                               f"{runs.CHARTS_EVERY_S:g} s; hover and zoom come when it ends. An interactive "
                               "chart's redraw costs the browser and the server several times an image's, "
                               "taken from the training on a small machine.")
images = running and not interactive


# Two heartbeats, both only while the page is shown: the step and state every REFRESH_S from a
# snapshot without the history, the charts every CHARTS_EVERY_S (each redraw costs the server a figure and
# the browser a re-render, which the training worker's cores paid for: bench/RESULTS.md). While a run trains
# the charts are images (klviz.views.svg): two watching pages' plotly redraws took ~0.6 of the 2-core box.
@st.fragment(run_every=runs.REFRESH_S if running else None)
def live_status() -> None:
    run = book.latest()
    if run is None:
        st.metric("Step", "0")
        st.info("Choose settings and press Start. Runs train a copy of the SFT model on this server's CPU/GPU.")
        return
    snap = run.job.snapshot(history=False)
    c = st.columns([1, 1, 4])
    c[0].metric("Step", f"{snap.step}", help=f"of {snap.steps} steps")
    c[1].metric("State", snap.state)
    polls = runs.count_poll()
    threads = f" · {snap.threads} CPU thread{'s' * (snap.threads != 1)}" if snap.threads and running else ""
    c[2].caption(plain(f"{run.name}{threads} · {'polling every ' + str(runs.REFRESH_S) + ' s' if running else 'idle'}"
                       f" · refresh {polls}" + (f" · {snap.stop_reason}" if snap.stop_reason else "")))
    if snap.error:
        source = current().source
        show_error(source.explain(snap.error) if source else snap.error)
    if book.any_running() != running:
        st.rerun()  # the job started or ended: rerun the page so polling switches on or off


@st.fragment(run_every=runs.CHARTS_EVERY_S if running else None)
def live_charts() -> None:
    run = book.latest()
    if run is None:
        return
    snaps = {name: r.job.snapshot() for name, r in dict(book.runs).items()}
    progress = tuple((name, s.step, s.state) for name, s in snaps.items())
    metrics = {n: s.metrics for n, s in snaps.items()}
    if images:
        st.image(book.figure("curves.svg", progress, lambda: svg.ppo_curves_svg(metrics, run.estimator)),
                 width="stretch", alt=svg.CURVES_ALT)
        st.caption(f"An image while the run trains, redrawn every {runs.CHARTS_EVERY_S:g} s: hover and zoom "
                   "come when it ends (or turn on Interactive charts while training).")
    else:
        st.plotly_chart(book.figure("curves", progress, lambda: plots.ppo_curves_figure(metrics, run.estimator)),
                        key="ppo.curves")
    bands = runs.ppo_bands(run, snaps[run.name])  # below the curves, full width (a column clipped it at 1280 px)
    if bands:
        if images:
            st.image(book.figure("bands.svg", (run.name, bands[0]), lambda: svg.mass_moved_svg(bands[1])),
                     width="stretch", alt=svg.MASS_MOVED_ALT)
        else:
            st.plotly_chart(book.figure("bands", (run.name, bands[0]), lambda: plots.mass_moved_figure(bands[1])),
                            key="ppo.mass_moved")
        st.caption(f"Mass moved by the policy of step {bands[0]} (its rollout), against its SFT model.")
    else:
        st.info("The mass-moved chart appears after the first step.")


live_status()
live_charts()
