"""klviz.views.tables' fast paths give exactly what the implementations they replaced gave
(tests/helpers/tables_reference.py: per-row numpy arrays, np.stack, a Python join per response), on a
token table read back from parquet as the dashboard reads it; compared with exact equality."""

import numpy as np
import pandas as pd
import pytest

from klviz.engine.columns import N_BANDS
from klviz.io import write_table
from klviz.tokentable import read_token_table
from klviz.views import tables
from tests.helpers import tables_reference as ref
from tests.unit.test_tables import RESPONSES, build_table, decode


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A token table written as `klviz score` writes it, tiled so that contribs tie across rows."""
    base = build_table(RESPONSES + [("sft", "c", 1, 5)], seed=3)
    df = pd.concat([base.assign(prompt_id=base["prompt_id"] + f"#{k}") for k in range(3)], ignore_index=True)
    path = tmp_path_factory.mktemp("fast") / "t.parquet"
    write_table(df, path, {"command": "score"})
    return path


@pytest.mark.parametrize("rows", ["all", "filtered", "one"])
def test_tables_equal_the_slow_path(written, rows):
    df, _ = read_token_table(written)
    df = {"all": df, "filtered": df[df["source"] == "sft"], "one": df.iloc[[7]]}[rows]
    seq = tables.per_sequence(df)
    pd.testing.assert_frame_equal(seq, ref.per_sequence(df), check_exact=True)
    h = tables.headline(df)
    assert h["kl_reverse_per_sequence"] == seq["kl_reverse"].mean() and h["n_sequences"] == len(seq)
    assert h["kl_forward_per_sequence"] == seq["kl_forward"].mean() and h["k3_per_sequence"] == seq["k3"].mean()
    bands = tables.band_totals(df)
    for col, want in zip(("mass_gained", "mass_lost", "kl_reverse", "kl_forward"), ref.band_means(df, N_BANDS)):
        assert np.array_equal(bands[col].to_numpy(), want)
    for got, want in zip(tables.token_shift(df, decode, top=7), ref.token_shift(df, decode, top=7)):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    for n in (10**6, 25, 3):  # all points, and the largest few (ties broken in row order)
        pd.testing.assert_frame_equal(tables.top_token_points(df, decode, max_points=n),
                                      ref.top_token_points(df, decode, max_points=n), check_exact=True)
    shift = tables.mass_shift(df, decode, max_points=25, top=7)
    pd.testing.assert_frame_equal(shift["points"], ref.top_token_points(df, decode, max_points=25), check_exact=True)
    pd.testing.assert_frame_equal(shift["per_sequence"], seq, check_exact=True)


def test_stack_refuses_ragged_cells():
    with pytest.raises(ValueError):
        tables._stack(pd.Series([np.zeros(2), np.zeros(3)], name="x"))


@pytest.mark.parametrize("n", [0, 1, 5, 17, 40, 41])
def test_largest_is_the_stable_descending_sort(n):
    values = np.random.default_rng(n).integers(-4, 5, 40).astype(np.float64) / 3  # many ties
    values[[3, 9]] = -0.0, 0.0
    want = pd.Series(values).sort_values(ascending=False, kind="stable").index[:n].to_numpy()
    assert np.array_equal(tables._largest(values, n), want)
    values[5] = np.nan
    want = pd.Series(values).sort_values(ascending=False, kind="stable").index[:n].to_numpy()
    assert np.array_equal(tables._largest(values, n), want)
