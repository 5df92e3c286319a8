"""klviz.views.acted against float64 brute force: explicit Python loops over token tables built by
the engine's token_stats from random float64 logits."""

import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
import torch

from klviz.engine.columns import RANK_COLUMNS, SCALAR_COLUMNS
from klviz.engine.divergence import token_stats
from klviz.views import acted

V = 50
RESPONSES = [("policy", "a", 0, 14), ("policy", "a", 1, 1), ("policy", "b", 0, 25),
             ("sft", "a", 0, 9), ("sft", "b", 3, 12)]


def decode(i: int) -> str:
    j = int(i) % 12  # texts shared by several ids
    return {0: " ", 1: "\n", 2: "<b>"}.get(j, f"w{j}")


def build_table(responses=RESPONSES, seed: int = 0, scale: float = 2.0) -> pd.DataFrame:
    """A token table from token_stats: sampled tokens are the SFT model's first, second or a random
    choice in turn, so every token-shift class occurs."""
    g = torch.Generator().manual_seed(seed)
    n = sum(r[3] for r in responses)
    sft = torch.randn(n, V, generator=g, dtype=torch.float64) * 2
    pol = sft + torch.randn(n, V, generator=g, dtype=torch.float64) * scale
    logp, logq = torch.log_softmax(pol, -1), torch.log_softmax(sft, -1)
    order = logq.argsort(-1, descending=True)
    pick = torch.randint(0, V, (n,), generator=g)
    y = torch.where(torch.arange(n) % 3 == 0, order[:, 0],
                    torch.where(torch.arange(n) % 3 == 1, order[:, 1], pick))
    stats = token_stats(logp, logq, y, top_k=3)
    rows = [(src, pid, sid, t) for src, pid, sid, length in responses for t in range(length)]
    data = {"source": [r[0] for r in rows], "prompt_id": [r[1] for r in rows],
            "sample_id": [r[2] for r in rows], "position": [r[3] for r in rows],
            "token_id": y.tolist(), "token": [decode(i) for i in y.tolist()]}
    for name in SCALAR_COLUMNS + RANK_COLUMNS:
        data[name] = stats[name].numpy()
    return pd.DataFrame(data).sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def df():
    return build_table()


def _cls(rank):
    return "unshifted" if rank == 1 else ("marginal" if rank <= 3 else "shifted")


def test_shift_fractions_count_policy_rows(df):
    got = acted.token_shift_fractions(df)
    counts = defaultdict(int)
    n = 0
    for r in df.itertuples():
        if r.source == "policy":
            counts[_cls(r.rank_sft)] += 1
            n += 1
    assert n == 40
    for c in acted.SHIFT_CLASSES:
        assert got[c] == counts[c] / n
        assert counts[c] > 0  # the builder makes every class occur
    plain = acted.token_shift_fractions(df.drop(columns="source"))  # no source: every row
    assert plain["shifted"] == sum(1 for r in df["rank_sft"] if r > 3) / len(df)


def test_shift_by_position(df):
    got = acted.token_shift_by_position(df)
    by = defaultdict(lambda: defaultdict(int))
    for r in df.itertuples():
        if r.source == "policy":
            by[r.position][_cls(r.rank_sft)] += 1
            by[r.position]["n"] += 1
    assert list(got["position"]) == sorted(by)
    for r in got.itertuples():
        w = by[r.position]
        assert r.n == w["n"]
        for c in acted.SHIFT_CLASSES:
            assert getattr(r, c) == pytest.approx(w[c] / w["n"], rel=1e-15)


def test_most_shifted_tokens(df):
    got = acted.most_shifted_tokens(df, top=4)
    acc = defaultdict(lambda: [0, 0, 0.0])
    for r in df.itertuples():
        if r.source == "policy":
            a = acc[r.token]
            a[0] += r.rank_sft > 3
            a[1] += 1
            a[2] += r.rank_sft
    want = sorted(((-a[0], t) for t, a in acc.items() if a[0] > 0))[:4]
    assert list(got["token"]) == [t for _, t in want]
    for r in got.itertuples():
        s, n, ranks = acc[r.token]
        assert (r.shifted, r.n) == (s, n)
        assert r.shifted_fraction == pytest.approx(s / n, rel=1e-15)
        assert r.mean_rank_sft == pytest.approx(ranks / n, rel=1e-15)


def _top_rows(values, fraction=0.2):
    k = max(1, int(round(fraction * len(values))))
    return set(sorted(range(len(values)), key=lambda i: (-values[i], i))[:k])


def test_forking_shares_and_overlap(df):
    got = acted.forking(df)
    ent_sft, ent_pol = list(df["entropy_sft"]), list(df["entropy_policy"])
    top = _top_rows(ent_sft)
    assert got["n_forking"] == len(top) == 12 and got["token_share"] == 12 / 61
    assert got["entropy_sft_threshold"] == min(ent_sft[i] for i in top)
    assert sum(e >= got["entropy_sft_threshold"] for e in ent_sft) == len(top)
    for col in ("kl_reverse", "kl_forward"):
        v = list(df[col])
        want = math.fsum(v[i] for i in top) / math.fsum(v)
        assert got[f"share_{col}"] == pytest.approx(want, rel=1e-12)
    assert got["overlap"] == len(top & _top_rows(ent_pol)) / len(top)
    assert 0 < got["overlap"] < 1


def test_kl_spikes_with_context(df):
    got = acted.kl_spikes(df, n=6, context=3)
    rows = list(df.itertuples())
    best = sorted(range(len(rows)), key=lambda i: (-max(rows[i].kl_reverse, rows[i].kl_forward), i))[:6]
    assert len(got) == 6
    for r, i in zip(got.itertuples(), best):
        w = rows[i]
        assert (r.source, r.prompt_id, r.sample_id, r.position) == (w.source, w.prompt_id, w.sample_id, w.position)
        assert r.kl_max == max(w.kl_reverse, w.kl_forward)
        assert r.direction == ("KL(policy || SFT)" if w.kl_reverse >= w.kl_forward else "KL(SFT || policy)")
        seq = {x.position: x.token for x in rows
               if (x.source, x.prompt_id, x.sample_id) == (w.source, w.prompt_id, w.sample_id)}
        assert r.before == "".join(seq[p] for p in range(w.position - 3, w.position) if p in seq)
        assert r.after == "".join(seq[p] for p in range(w.position + 1, w.position + 4) if p in seq)


def test_rl_razor_is_mean_summed_forward_kl_on_sft_samples(df):
    got = acted.rl_razor(df)
    sums = defaultdict(float)
    for r in df.itertuples():
        if r.source == "sft":
            sums[(r.prompt_id, r.sample_id)] += r.kl_forward
    assert got["n_sequences"] == 2
    assert got["kl_forward_per_sequence"] == pytest.approx(math.fsum(sums.values()) / 2, rel=1e-12)
    assert math.isnan(acted.rl_razor(df[df["source"] == "policy"])["kl_forward_per_sequence"])


def test_entropy_change_and_correlation(df):
    got = acted.entropy_change(df)
    exact = [a - b for a, b in zip(df["entropy_policy"], df["entropy_sft"])]
    first = list(df[acted.FIRST_ORDER])
    n = len(exact)
    assert got["exact_change_mean"] == pytest.approx(math.fsum(exact) / n, rel=1e-12)
    assert got["first_order_change_mean"] == pytest.approx(math.fsum(first) / n, rel=1e-12)
    mx, my = math.fsum(exact) / n, math.fsum(first) / n
    cov = math.fsum((x - mx) * (y - my) for x, y in zip(exact, first))
    var_x = math.fsum((x - mx) ** 2 for x in exact)
    var_y = math.fsum((y - my) ** 2 for y in first)
    assert got["correlation"] == pytest.approx(cov / math.sqrt(var_x * var_y), rel=1e-10)
    missing = acted.entropy_change(df.drop(columns=acted.FIRST_ORDER))
    assert math.isnan(missing["correlation"]) and math.isnan(missing["first_order_change_mean"])


def test_first_order_tracks_exact_for_small_moves():
    """The builder's policy is close to the SFT model: the prediction correlates with the truth."""
    near = build_table(seed=1, scale=0.05)
    assert acted.entropy_change(near)["correlation"] > 0.95


def test_summary_sections(df):
    s = acted.acted_summary(df)
    assert s["token_shift"] == acted.token_shift_fractions(df)
    f = acted.forking(df)
    assert s["forking"] == {k: f[k] for k in ("entropy_sft_threshold", "share_kl_reverse", "share_kl_forward")}
    e = acted.entropy_change(df)
    assert s["entropy"] == {"exact_change_mean": e["exact_change_mean"],
                            "first_order_change_mean": e["first_order_change_mean"]}
    assert sum(s["token_shift"].values()) == pytest.approx(1.0, rel=1e-15)


@pytest.mark.parametrize("n_rows", [0, 1])
def test_empty_and_single_row(df, n_rows):
    small = df[df["source"] == "policy"].head(n_rows)
    s = acted.acted_summary(small)
    assert len(acted.kl_spikes(small)) == n_rows
    assert len(acted.token_shift_by_position(small)) == n_rows
    if n_rows == 0:
        assert all(math.isnan(v) for v in s["token_shift"].values())
        assert math.isnan(s["forking"]["share_kl_reverse"])
    else:
        assert sum(s["token_shift"].values()) == 1.0
        assert s["forking"]["share_kl_reverse"] == 1.0  # the one row is the top 20%
        assert acted.kl_spikes(small)["before"][0] == "" == acted.kl_spikes(small)["after"][0]


def test_figures(df):
    from klviz.views import acted_plots
    prof = acted.token_shift_by_position(df)
    fig = acted_plots.shift_by_position_figure(prof)
    assert [list(t.y) for t in fig.data] == [list(prof[c]) for c in acted.SHIFT_CLASSES]
    top = acted.most_shifted_tokens(df)
    bars = acted_plots.most_shifted_figure(top)
    assert list(bars.layout.yaxis.tickvals) == list(range(len(top))) and len(top) >= 3
    assert "&lt;b&gt;" in " ".join(bars.data[0].hovertext) and "<b>" not in " ".join(bars.layout.yaxis.ticktext)
    f = acted.forking(df)
    assert list(acted_plots.forking_figure(f).data[0].y) == [f["token_share"], f["share_kl_reverse"],
                                                             f["share_kl_forward"]]
    e = acted.entropy_change(df)
    sc = acted_plots.entropy_scatter_figure(e["exact"], e["first_order"], e["correlation"], list(df["token"]))
    assert sorted(sc.data[0].y) == sorted(e["exact"]) and f"{e['correlation']:.3f}" in sc.layout.title.text
    for small in (df.head(0), df.head(1)):
        acted_plots.shift_by_position_figure(acted.token_shift_by_position(small))
        acted_plots.most_shifted_figure(acted.most_shifted_tokens(small))
        e = acted.entropy_change(small)
        acted_plots.entropy_scatter_figure(e["exact"], e["first_order"], e["correlation"])


def test_where_rl_acted_is_the_page_s_frames(df):
    got = acted.where_rl_acted(df, spikes=5)
    assert got["token_shift"] == acted.token_shift_fractions(df) and got["forking"] == acted.forking(df)
    pd.testing.assert_frame_equal(got["shift_by_position"], acted.token_shift_by_position(df))
    pd.testing.assert_frame_equal(got["most_shifted"], acted.most_shifted_tokens(df))
    pd.testing.assert_frame_equal(got["spikes"], acted.kl_spikes(df, 5))
    assert got["razor"] == acted.rl_razor(df)
    np.testing.assert_array_equal(got["entropy"]["exact"], acted.entropy_change(df)["exact"])
    policy = acted.where_rl_acted(df, "policy")
    rows = df[df["source"] == "policy"]
    assert policy["forking"] == acted.forking(rows) and len(policy["entropy"]["exact"]) == len(rows)
    assert policy["razor"] == acted.rl_razor(df)  # RL's Razor reads the SFT samples whatever is shown
