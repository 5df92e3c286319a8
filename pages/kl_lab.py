"""KL lab: edit a policy and an SFT distribution over a few actions; see both KLs, the estimators,
their gradients, the KL-regularized optima, and the verdicts of `klviz claims`: one tab at a time,
and only the open tab runs.

A thin page: widgets -> klviz.lab.toy / klviz.lab.claims -> klviz.views.lab_plots -> st.plotly_chart. Mounted by app.py
as "KL lab"; it also runs on its own (`streamlit run pages/kl_lab.py`), so no st.set_page_config here.
KL(pi||SFT) = sum pi log(pi/SFT) is the reverse KL (InstructGPT's penalty); KL(SFT||pi) the forward KL.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from klviz.lab import claims, toy

from klviz.views import lab_plots

from klviz.app.data import claim_verdicts
from klviz.app.tabs import open_tab
from klviz.errors import KlvizError

KEY_KIND = "kl_lab.kind"
KEY_TABLE = "kl_lab.table"  # one editor per kind: f"{KEY_TABLE}.{kind}"
KEY_SAMPLES = "kl_lab.samples"
KEY_SEED = "kl_lab.seed"
KEY_BETA = "kl_lab.beta"
KEY_EVIDENCE = "kl_lab.evidence"
KEY_SECTION = "kl_lab.section"  # the open tab
CLAIMS_SEED = 0  # the same seed as `klviz claims`, so the page and the CLI agree
_PROBS = {"policy": [0.40, 0.30, 0.02, 0.18, 0.10], "sft": [0.05, 0.30, 0.40, 0.15, 0.10],
          "reward": [1.0, 0.5, 0.0, 0.2, -0.5]}
DEFAULTS = {
    "probabilities": pd.DataFrame(_PROBS),
    "logits": pd.DataFrame({"policy": np.log(_PROBS["policy"]).round(3),
                            "sft": np.log(_PROBS["sft"]).round(3), "reward": _PROBS["reward"]}),
}


def _numbers(df: pd.DataFrame) -> dict:
    """Four significant digits for every numeric column (float rounding noise stays visible as ~1e-16)."""
    return {c: st.column_config.NumberColumn(format="%.4g") for c in df.columns if df[c].dtype.kind == "f"}


def _read_table(table: pd.DataFrame, kind: str):
    """(policy, sft, reward) from the edited table; KlvizError with one sentence if a cell is bad."""
    return (toy.as_distribution(table["policy"], kind, "policy"),
            toy.as_distribution(table["sft"], kind, "SFT"), toy.as_reward(table["reward"]))


def _distributions(policy, ref) -> None:
    st.subheader("Both distributions and each action's term in each KL")
    left, right = st.columns(2)
    left.metric("KL(pi||SFT), reverse", f"{toy.kl_reverse(policy, ref):.4f} nats")
    right.metric("KL(SFT||pi), forward", f"{toy.kl_forward(policy, ref):.4f} nats")
    st.plotly_chart(lab_plots.distributions_figure(policy, ref))


def _estimators(policy, ref) -> None:
    st.subheader("Estimators k1, k2, k3 (Schulman, \"Approximating KL Divergence\")")
    st.caption("Samples a ~ pi, log-ratio = log(pi/SFT); k1 = log-ratio, k2 = log-ratio^2/2, "
               "k3 = exp(-log-ratio) - 1 + log-ratio. Gaussian rows: x ~ N(0,1), target KL(N(0,1)||N(mu,1)).")
    n = st.select_slider("Samples n", options=[100, 1_000, 10_000, 100_000], value=10_000, key=KEY_SAMPLES)
    seed = int(st.number_input("Sampling seed", min_value=0, value=0, step=1, key=KEY_SEED))
    table = pd.DataFrame(toy.estimator_table(policy, ref, n, seed))
    st.dataframe(table, hide_index=True, column_config=_numbers(table))
    samples = toy.sample_log_ratios(policy, ref, n, np.random.default_rng(seed))
    kl, (_, var) = toy.kl_reverse(policy, ref), toy.estimator_moments(policy, ref)["k1"]
    st.plotly_chart(lab_plots.convergence_figure(toy.running_mean(samples), kl, float(np.sqrt(var))))


def _gradients(policy, ref) -> None:
    st.subheader("Expected gradients w.r.t. the policy logits")
    st.caption("In reward: E_pi[k(a) grad log pi(a)], the REINFORCE gradient of reward -beta*k divided by "
               "-beta. As loss: E_pi[grad k(a)] with the samples held fixed. Both beside grad KL(pi||SFT) "
               "and grad KL(SFT||pi) (\"A Comedy of Estimators\", 2025).")
    grads = toy.gradient_table(policy, ref)
    st.plotly_chart(lab_plots.gradients_figure(grads))
    table = pd.DataFrame(grads, index=lab_plots.action_labels(policy.size)).T
    st.dataframe(table, column_config=_numbers(table))


def _optima(ref, reward) -> None:
    st.subheader("KL-regularized optima: which direction keeps the SFT model's modes")
    beta = st.slider("beta", min_value=0.02, max_value=2.0, value=0.2, step=0.02, key=KEY_BETA)
    st.plotly_chart(lab_plots.optima_figure(ref, toy.optimal_policy_reverse(ref, reward, beta),
                                            toy.optimal_policy_forward(ref, reward, beta), reward))


def _claims_section() -> None:
    st.subheader("Claims, settled now (same as `klviz claims`)")
    found = claim_verdicts(CLAIMS_SEED)
    st.dataframe(pd.DataFrame([{"id": c.id, "holds": c.holds, "statement": c.statement} for c in found]),
                 hide_index=True, column_config={"statement": st.column_config.TextColumn(width="large")})
    by_id = {c.id: c for c in found}
    chosen = by_id[st.selectbox("Evidence for", list(by_id), key=KEY_EVIDENCE,
                                format_func=lambda i: f"{i}: {'holds' if by_id[i].holds else 'does not hold'}")]
    st.text(chosen.statement)
    st.json(chosen.evidence)
    with st.expander("As printed by `klviz claims`"):
        st.text(claims.format_claims(found))  # plain text: no syntax highlighter to load


st.title("KL lab")
st.caption("KL(pi||SFT) = sum pi log(pi/SFT) is the reverse KL, InstructGPT's penalty; "
           "KL(SFT||pi) = sum SFT log(SFT/pi) is the forward KL.")
kind = st.radio("The table holds", list(DEFAULTS), horizontal=True, key=KEY_KIND)
table = st.data_editor(DEFAULTS[kind], key=f"{KEY_TABLE}.{kind}", num_rows="dynamic")
try:
    policy, ref, reward = _read_table(table, kind)
except KlvizError as err:
    st.error(str(err))
    policy = ref = reward = None
SECTIONS = {
    "Distributions": lambda: _distributions(policy, ref),
    "Estimators": lambda: _estimators(policy, ref),
    "Gradients": lambda: _gradients(policy, ref),
    "Optima": lambda: _optima(ref, reward),
    "Claims": _claims_section,
}
name, tab = open_tab(list(SECTIONS), KEY_SECTION)  # one section at a time: only the open tab runs
with tab:
    if policy is None and name != "Claims":
        st.info("Fix the table above to see this section; the claims do not depend on it.")
    else:
        SECTIONS[name]()
