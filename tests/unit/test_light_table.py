"""The Overview's light read of a token table (klviz.tokentable.read_light_table: scalar columns and band
matrices, no per-row arrays) gives exactly what the full read gives: the same scalar frame, the band
columns stacked, and so the same headline and band totals, for a whole table and for each step of a
series; compared with exact equality. And the full read (pq.ParquetFile) gives the frame the replaced
reader (pq.read_table) gave."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from klviz.engine.columns import BAND_COLUMNS, N_BANDS
from klviz.errors import KlvizError
from klviz.io import read_metadata, write_table
from klviz.tokentable import read_light_table, read_token_table
from klviz.views import tables
from klviz.views.trajectory import at_step
from tests.unit.test_tables import RESPONSES, build_table

LIST_COLUMNS = 12  # four band columns, eight top-k columns (ids, contrib, p, q of gained and lost)


def _table(seed: int = 3) -> pd.DataFrame:
    base = build_table(RESPONSES + [("sft", "c", 1, 5)], seed=seed)
    return pd.concat([base.assign(prompt_id=base["prompt_id"] + f"#{k}") for k in range(3)], ignore_index=True)


def _series() -> pd.DataFrame:
    """Three checkpoints of different values, rows of the steps interleaved (at_step must pick them out)."""
    parts = [_table(seed).assign(checkpoint=f"checkpoint-{step}", step=step) for seed, step in ((3, 30), (4, 10), (5, 20))]
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=0).reset_index(drop=True)


def _headline_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k] or (np.isnan(got[k]) and np.isnan(want[k])), k


def _assert_light_equals_full(path, step=None):
    full, meta = read_token_table(path)
    light = read_light_table(path)
    if step is not None:
        full, light = at_step(full, step), light.at_step(step)
    lists = [f.name for f in pq.read_schema(path) if pa.types.is_nested(f.type)]
    assert len(lists) == LIST_COLUMNS
    pd.testing.assert_frame_equal(light.frame, full.drop(columns=lists), check_exact=True)
    for col in BAND_COLUMNS:
        np.testing.assert_array_equal(light.bands[col], tables._stack(full[col], N_BANDS), strict=True)
    pd.testing.assert_frame_equal(tables.band_means(light.bands), tables.band_totals(full), check_exact=True)
    _headline_equal(tables.headline(light.frame), tables.headline(full))
    assert light.meta == meta == read_metadata(path)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("light")
    table, series = root / "t.parquet", root / "series.parquet"
    write_table(_table(), table, {"command": "score", "vocab": '{"1": "a"}'})
    write_table(_series(), series, {"command": "trajectory"})
    return table, series


def test_the_light_read_equals_the_full_read(written):
    _assert_light_equals_full(written[0])


@pytest.mark.parametrize("step", [10, 20, 30, 99])
def test_each_step_of_a_series_equals_the_full_read(written, step):
    _assert_light_equals_full(written[1], step)


def test_row_groups_float32_cells_and_nan_values_are_read_alike(tmp_path):
    df = _table()
    df["kl_forward_by_sft_bin"] = [np.asarray(v, dtype=np.float32) for v in df["kl_forward_by_sft_bin"]]
    df.at[4, "mass_gained_by_sft_bin"] = np.array([np.nan, 1.0, np.nan, 0.0, -0.0, np.inf, 2.0])  # NaN: null
    table = pa.Table.from_pandas(df, preserve_index=False)
    fixed = table.schema.get_field_index("kl_reverse_by_sft_bin")  # a fixed-size list column reads alike too
    table = table.set_column(fixed, "kl_reverse_by_sft_bin",
                             table.column(fixed).cast(pa.list_(pa.float64(), N_BANDS)))
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=7)  # several row groups: chunked columns
    assert pq.ParquetFile(path).num_row_groups > 1
    _assert_light_equals_full(path)


@pytest.mark.parametrize("cells", ["ragged", "null"])
def test_band_cells_the_matrices_cannot_hold_leave_them_to_the_full_read(tmp_path, cells):
    df = _table()
    df["kl_reverse_by_sft_bin"] = df["kl_reverse_by_sft_bin"].astype(object)
    df.at[2, "kl_reverse_by_sft_bin"] = np.zeros(N_BANDS - 1) if cells == "ragged" else None
    path = tmp_path / "odd.parquet"
    write_table(df, path, {})
    light = read_light_table(path)
    assert light.bands is None
    full, _ = read_token_table(path)
    pd.testing.assert_frame_equal(light.frame, full[light.frame.columns], check_exact=True)


def _odd_tables(root) -> list:
    """Tables the light read leaves to the full read, one with a stored index, one of several row groups."""
    df = _table()
    df["kl_reverse_by_sft_bin"] = df["kl_reverse_by_sft_bin"].astype(object)
    df.at[2, "kl_reverse_by_sft_bin"], df.at[3, "kl_reverse_by_sft_bin"] = np.zeros(N_BANDS - 1), None
    df.at[5, "gained_top_ids"] = None
    paths = [root / "odd.parquet", root / "index.parquet", root / "groups.parquet"]
    write_table(df, paths[0], {})
    pq.write_table(pa.Table.from_pandas(df.set_index("prompt_id"), preserve_index=True), paths[1])
    pq.write_table(pa.Table.from_pandas(_table(), preserve_index=False), paths[2], row_group_size=5)
    return paths


def test_the_full_read_equals_the_replaced_reader(written, tmp_path):
    """read_token_table (pq.ParquetFile) gives what pq.read_table(path).to_pandas() gave."""
    for path in [*written, *_odd_tables(tmp_path)]:
        full, _ = read_token_table(path)
        pd.testing.assert_frame_equal(full, pq.read_table(path).to_pandas(), check_exact=True)


def test_both_reads_refuse_a_file_with_one_sentence(tmp_path):
    bad, partial = tmp_path / "bad.parquet", tmp_path / "partial.parquet"
    bad.write_text("not parquet")
    pq.write_table(pa.table({"prompt_id": ["a"], "token": ["x"]}), partial)
    for path, shown, said in ((bad, "bad.parquet", "bad.parquet is not a parquet file."),
                              (partial, "mine.parquet", "mine.parquet is not a klviz token table"),
                              (tmp_path / "none.parquet", "none.parquet", "none.parquet: no such file."),
                              (tmp_path, "dir.parquet", "dir.parquet is not a file.")):
        for read in (read_light_table, read_token_table):
            with pytest.raises(KlvizError, match="^" + said.replace(".", r"\.")):
                read(path, shown)
