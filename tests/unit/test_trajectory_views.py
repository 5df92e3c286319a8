"""klviz.views.trajectory against plain loops over a synthetic checkpoint series."""

import math

import numpy as np
import pandas as pd
import pytest

from klviz.views.trajectory import (band_by_step, band_heatmap_figure, by_step, is_series, kl_by_step_figure,
                                    most_moved, still_steps)


def _series(rng, steps=(10, 20, 30)):
    rows = []
    for step in steps:
        for prompt in ("a", "b"):
            for pos in range(3):
                g, l = rng.dirichlet(np.ones(7)) * 0.1, rng.dirichlet(np.ones(7)) * 0.1
                rows.append({"checkpoint": f"checkpoint-{step}", "step": step, "prompt_id": prompt, "sample_id": 0,
                             "position": pos, "token": f"t{prompt}{pos}", "logp_policy": float(-rng.exponential()),
                             "kl_reverse": float(rng.exponential()), "kl_forward": float(rng.exponential()),
                             "entropy_policy": 1.0, "entropy_sft": 1.0, "tv": float(rng.uniform()),
                             "mass_gained_by_sft_bin": list(g), "mass_lost_by_sft_bin": list(l)})
    return pd.DataFrame(rows)


def test_by_step_and_bands_equal_loops():
    df = _series(np.random.default_rng(0))
    assert is_series(df) and not is_series(df[df["step"] == 10])
    steps = by_step(df)
    assert steps["step"].tolist() == [10, 20, 30]
    rows = df.to_dict("records")
    for _, s in steps.iterrows():
        mine = [r for r in rows if r["step"] == s["step"]]
        assert s["kl_reverse_per_token"] == pytest.approx(sum(r["kl_reverse"] for r in mine) / len(mine), rel=1e-12)
        seqs = {}
        for r in mine:
            seqs[r["prompt_id"]] = seqs.get(r["prompt_id"], 0.0) + r["kl_forward"]
        assert s["kl_forward_per_sequence"] == pytest.approx(sum(seqs.values()) / len(seqs), rel=1e-12)
        assert s["tv_per_token"] == pytest.approx(sum(r["tv"] for r in mine) / len(mine), rel=1e-12)
    gained, lost = band_by_step(df)
    assert gained.shape == (7, 3) and lost.columns.tolist() == [10, 20, 30]
    for step in (10, 20, 30):
        mine = [r for r in rows if r["step"] == step]
        for b in range(7):
            assert gained[step].iloc[b] == pytest.approx(sum(r["mass_gained_by_sft_bin"][b] for r in mine) / len(mine))
            assert lost[step].iloc[b] == pytest.approx(sum(r["mass_lost_by_sft_bin"][b] for r in mine) / len(mine))
    assert len(kl_by_step_figure(steps).data) == 3 and len(band_heatmap_figure(gained, lost).data) == 2
    layout = kl_by_step_figure(steps).layout  # both axes from 0 (the zeros meet); the TV axis's own round ticks
    assert layout.yaxis.rangemode == layout.yaxis2.rangemode == "tozero" and layout.yaxis2.tickmode == "auto"


def test_most_moved_equals_loop():
    df = _series(np.random.default_rng(1))
    got = most_moved(df, top=2)
    rows = df.to_dict("records")
    want = []
    for a, b in ((10, 20), (20, 30)):
        pairs = []
        for x in rows:
            if x["step"] != a:
                continue
            y = next(r for r in rows if r["step"] == b and (r["prompt_id"], r["position"]) == (x["prompt_id"], x["position"]))
            pairs.append((math.exp(y["logp_policy"]) - math.exp(x["logp_policy"]), x["prompt_id"], x["position"]))
        want += sorted(pairs, key=lambda t: -abs(t[0]))[:2]
    assert got[["step_from", "step_to"]].values.tolist() == [[10, 20], [10, 20], [20, 30], [20, 30]]
    assert [(pytest.approx(d), p, pos) for d, p, pos in want] == list(zip(got["delta"], got["prompt_id"], got["position"]))
    assert most_moved(df[df["step"] == 10]).empty


def test_still_steps_are_the_steps_where_no_mass_moved():
    """A step whose rows carry zero mass in every band, gained and lost (the policy equal to the SFT model),
    is named; a step with any mass in one band is not."""
    df = _series(np.random.default_rng(1), steps=(0, 10, 20))
    zero = [0.0] * 7
    df.loc[df["step"] == 0, "mass_gained_by_sft_bin"] = pd.Series([zero] * 6, index=df.index[df["step"] == 0])
    df.loc[df["step"] == 0, "mass_lost_by_sft_bin"] = pd.Series([zero] * 6, index=df.index[df["step"] == 0])
    one = [0.0] * 6 + [1e-9]
    df.loc[df["step"] == 20, "mass_gained_by_sft_bin"] = pd.Series([zero] * 5 + [one], index=df.index[df["step"] == 20])
    df.loc[df["step"] == 20, "mass_lost_by_sft_bin"] = pd.Series([zero] * 6, index=df.index[df["step"] == 20])
    assert still_steps(*band_by_step(df)) == [0]
