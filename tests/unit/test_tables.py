"""klviz.views.tables against float64 brute force: explicit loops over a token table built by token_stats."""

import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
import torch

from klviz.views import tables
from klviz.engine.columns import BAND_COLUMNS, BAND_LABELS, N_BANDS, SCALAR_COLUMNS, TOP_COLUMNS
from klviz.engine.divergence import token_stats

V, TOP_K = 200, 5
SCRIPT = "<script>alert(1)</script>"
# (source, prompt_id, sample_id, length): lengths differ, one response is a single token.
RESPONSES = [("policy", "a", 0, 6), ("policy", "a", 1, 1), ("policy", "b", 0, 9),
             ("sft", "a", 0, 4), ("sft", "b", 3, 7)]


def decode(i: int) -> str:
    """Several ids share one text (i % 40), so aggregating by text differs from aggregating by id."""
    j = int(i) % 40
    return {0: " ", 1: "\n", 2: SCRIPT, 3: "\t"}.get(j, f"w{j}")


def build_table(responses=RESPONSES, seed: int = 0) -> pd.DataFrame:
    """A token table in the layout `score` writes, from float64 random logits through token_stats."""
    g = torch.Generator().manual_seed(seed)
    n = sum(r[3] for r in responses)
    pol = torch.randn(n, V, generator=g, dtype=torch.float64) * 5
    sft = pol + torch.randn(n, V, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, V, (n,), generator=g)
    stats = token_stats(torch.log_softmax(pol, -1), torch.log_softmax(sft, -1), y, top_k=TOP_K)
    rows = []
    for src, pid, sid, length in responses:
        rows += [(src, pid, sid, t) for t in range(length)]
    data = {"source": [r[0] for r in rows], "prompt_id": [r[1] for r in rows],
            "sample_id": [r[2] for r in rows], "position": [r[3] for r in rows],
            "token_id": y.tolist(), "token": [decode(i) for i in y.tolist()]}
    for name in SCALAR_COLUMNS:
        data[name] = stats[name].numpy()
    for name in BAND_COLUMNS + TOP_COLUMNS:
        data[name] = list(stats[name].numpy())
    # Shuffle rows: the functions must not rely on the table's order.
    return pd.DataFrame(data).sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def df():
    return build_table()


def _brute_sequences(df):
    acc = defaultdict(lambda: defaultdict(float))
    text = defaultdict(dict)
    for r in df.itertuples():
        key = (r.source, r.prompt_id, r.sample_id)
        for c in ("kl_reverse", "kl_forward", "k1", "k2", "k3", "tv"):
            acc[key][c] += getattr(r, c)
        acc[key]["n_tokens"] += 1
        text[key][r.position] = r.token
    for key in acc:
        acc[key]["response"] = "".join(text[key][p] for p in sorted(text[key]))
    return acc


def test_per_sequence_matches_hand_groupby(df):
    got = tables.per_sequence(df)
    want = _brute_sequences(df)
    assert len(got) == len(RESPONSES) == len(want)
    for r in got.itertuples():
        w = want[(r.source, r.prompt_id, r.sample_id)]
        assert r.n_tokens == w["n_tokens"]
        for c in ("kl_reverse", "kl_forward", "k1", "k2", "k3"):
            assert getattr(r, c) == pytest.approx(w[c], rel=1e-12, abs=1e-15)
        assert r.tv == pytest.approx(w["tv"] / w["n_tokens"], rel=1e-12)
        assert r.response == w["response"]


def test_headline_matches_loops(df):
    h = tables.headline(df)
    seqs = _brute_sequences(df).values()
    assert h["n_sequences"] == len(RESPONSES) and h["n_tokens"] == len(df)
    assert h["kl_reverse_per_token"] == pytest.approx(math.fsum(df["kl_reverse"]) / len(df), rel=1e-12)
    assert h["kl_forward_per_token"] == pytest.approx(math.fsum(df["kl_forward"]) / len(df), rel=1e-12)
    assert h["tv_per_token"] == pytest.approx(math.fsum(df["tv"]) / len(df), rel=1e-12)
    for name, col in (("kl_reverse_per_sequence", "kl_reverse"), ("kl_forward_per_sequence", "kl_forward"),
                      ("k1_per_sequence", "k1"), ("k3_per_sequence", "k3")):
        assert h[name] == pytest.approx(math.fsum(s[col] for s in seqs) / len(seqs), rel=1e-12)
    # Per sequence is not per token times anything simple when lengths differ.
    assert h["kl_reverse_per_sequence"] != pytest.approx(h["kl_reverse_per_token"])


def test_band_totals_are_means_that_sum_to_tv_and_kls(df):
    b = tables.band_totals(df)
    assert list(b["label"]) == list(BAND_LABELS) and list(b["band"]) == list(range(N_BANDS))
    n = len(df)
    for col, src in (("mass_gained", "mass_gained_by_sft_bin"), ("mass_lost", "mass_lost_by_sft_bin"),
                     ("kl_reverse", "kl_reverse_by_sft_bin"), ("kl_forward", "kl_forward_by_sft_bin")):
        for k in range(N_BANDS):
            assert b[col][k] == pytest.approx(math.fsum(row[k] for row in df[src]) / n, rel=1e-12, abs=1e-18)
    tv = math.fsum(df["tv"]) / n
    assert b["mass_gained"].sum() == pytest.approx(tv, rel=1e-10)
    assert b["mass_lost"].sum() == pytest.approx(tv, rel=1e-10)
    assert b["kl_reverse"].sum() == pytest.approx(df["kl_reverse"].mean(), rel=1e-10)
    assert b["kl_forward"].sum() == pytest.approx(df["kl_forward"].mean(), rel=1e-10)
    assert (b["mass_gained"] > 0).sum() >= 3  # the setup spreads q over several bands


def test_bands_from_ppo_equals_band_totals(df):
    record = {"step": 3, "n_tokens": len(df)}
    for col in BAND_COLUMNS:
        record[col] = [math.fsum(row[k] for row in df[col]) for k in range(N_BANDS)]
    got, want = tables.bands_from_ppo(record), tables.band_totals(df)
    pd.testing.assert_frame_equal(got, want, rtol=1e-12)
    del record["n_tokens"]
    sums = tables.bands_from_ppo(record)
    assert sums["mass_gained"].sum() == pytest.approx(df["tv"].sum(), rel=1e-10)


def _brute_shift(df, kind):
    acc = defaultdict(lambda: [0.0, 0, 0.0, 0.0])
    for _, r in df.iterrows():
        for i, c, p, q in zip(r[f"{kind}_top_ids"], r[f"{kind}_top_contrib"], r[f"{kind}_top_p"], r[f"{kind}_top_q"]):
            a = acc[decode(i)]
            a[0] += c; a[1] += 1; a[2] += p; a[3] += q
    return {t: (c, n, sp / n, sq / n) for t, (c, n, sp, sq) in acc.items()}


def test_token_shift_aggregates_by_text(df):
    gained, lost = tables.token_shift(df, decode, top=8)
    for frame, kind in ((gained, "gained"), (lost, "lost")):
        want = _brute_shift(df, kind)
        assert list(frame.columns) == ["token", "contrib", "count", "mean_p", "mean_q"]
        assert len(frame) == 8
        best = sorted(want.values(), key=lambda v: -v[0])[:8]
        assert list(frame["contrib"]) == pytest.approx([v[0] for v in best], rel=1e-12)
        for r in frame.itertuples():
            c, n, mp, mq = want[r.token]
            assert (r.contrib, r.count, r.mean_p, r.mean_q) == pytest.approx((c, n, mp, mq), rel=1e-12)
    assert gained["count"].sum() > 8  # texts shared by several ids and positions were merged


def test_top_token_points(df):
    pts = tables.top_token_points(df, decode)
    assert len(pts) == 2 * TOP_K * len(df)
    assert set(pts["kind"]) == {"gained", "lost"}
    g = pts[pts["kind"] == "gained"]
    assert g["contrib"].sum() == pytest.approx(math.fsum(c for row in df["gained_top_contrib"] for c in row))
    few = tables.top_token_points(df, decode, max_points=7)
    assert len(few) == 7
    assert few["contrib"].min() == pytest.approx(np.sort(pts["contrib"].to_numpy())[-7])


def test_mass_shift_is_the_page_s_frames(df):
    got = tables.mass_shift(df, decode, max_points=7, top=3)
    assert set(got) == {"bands", "points", "gained", "lost", "profile", "per_sequence"}
    gained, lost = tables.token_shift(df, decode, top=3)
    pd.testing.assert_frame_equal(got["bands"], tables.band_totals(df))
    pd.testing.assert_frame_equal(got["points"], tables.top_token_points(df, decode, max_points=7))
    pd.testing.assert_frame_equal(got["gained"], gained)
    pd.testing.assert_frame_equal(got["lost"], lost)
    pd.testing.assert_frame_equal(got["profile"], tables.position_profile(df))
    pd.testing.assert_frame_equal(got["per_sequence"], tables.per_sequence(df))


def test_position_profile(df):
    prof = tables.position_profile(df)
    assert list(prof["position"]) == list(range(max(r[3] for r in RESPONSES)))
    for r in prof.itertuples():
        rows = df[df["position"] == r.position]
        assert r.n == sum(1 for resp in RESPONSES if resp[3] > r.position)
        for c in ("kl_reverse", "kl_forward", "k1", "k3"):
            assert getattr(r, c) == pytest.approx(math.fsum(rows[c]) / len(rows), rel=1e-12)


def test_position_detail(df):
    row = df.iloc[3]
    d = tables.position_detail(row, decode)
    for kind in ("gained", "lost"):
        f = d[kind]
        assert list(f["token"]) == [decode(i) for i in row[f"{kind}_top_ids"]]
        np.testing.assert_allclose(f["log_p"], np.log(row[f"{kind}_top_p"]), rtol=1e-12)
        np.testing.assert_allclose(f["log_q"], np.log(row[f"{kind}_top_q"]), rtol=1e-12)
        assert list(f["contrib"]) == sorted(f["contrib"], reverse=True)
    zero = tables.position_detail({**row.to_dict(), "gained_top_p": np.zeros(TOP_K)}, decode)
    assert np.isfinite(zero["gained"]["log_p"]).all()


@pytest.mark.parametrize("n_rows", [0, 1])
def test_empty_and_single_row(df, n_rows):
    small = df.head(n_rows)
    h = tables.headline(small)
    assert h["n_tokens"] == n_rows and h["n_sequences"] == n_rows
    assert len(tables.per_sequence(small)) == n_rows
    b = tables.band_totals(small)
    assert len(b) == N_BANDS
    assert b["mass_gained"].sum() == pytest.approx(small["tv"].sum())
    gained, lost = tables.token_shift(small, decode)
    assert gained["count"].sum() == lost["count"].sum() == TOP_K * n_rows
    assert len(tables.top_token_points(small, decode)) == 2 * TOP_K * n_rows
    assert len(tables.position_profile(small)) == n_rows
    if n_rows == 0:
        assert math.isnan(h["kl_reverse_per_token"]) and len(gained) == 0 and len(lost) == 0


def test_table_without_source_column(df):
    plain = df[df["source"] == "policy"].drop(columns="source")
    seq = tables.per_sequence(plain)
    assert set(seq["source"]) == {tables.DEFAULT_SOURCE}
    assert len(seq) == 3 and seq["n_tokens"].sum() == len(plain)
