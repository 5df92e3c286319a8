"""klviz.views.export: the download files hold the token table (parquet round-trips, CSV flattens list
columns), and the HTML report holds the figures."""

import io

import pandas as pd
import pytest

from klviz.views import export
from tests.helpers.tiny import save_pair


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A tiny random GPT-2 pair: (policy folder, sft folder)."""
    return save_pair(tmp_path_factory.mktemp("tiny"), kind="gpt2")


def test_downloads_are_the_token_table_and_a_report(tiny_dirs):
    from klviz.views import plots, tables
    from klviz.models import load_pair
    from klviz.views.report import report_html
    from klviz.prompts import Prompt
    from klviz.sampling import SamplingConfig, analyze

    pair = load_pair(*tiny_dirs, device="cpu")
    df = analyze(pair, [Prompt(id="a", text="the food was")], SamplingConfig(samples_per_prompt=2, max_new_tokens=5),
                 progress=False)
    back = pd.read_parquet(io.BytesIO(export.parquet_bytes(df, {"pair": "tiny"})))
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    assert back["kl_reverse"].tolist() == df["kl_reverse"].tolist()
    csv = pd.read_csv(io.BytesIO(export.csv_bytes(df)))
    assert len(csv) == len(df) and csv["mass_gained_by_sft_bin"].str.startswith("[").all()
    page = report_html("klviz", [("Mass moved", plots.mass_moved_figure(tables.band_totals(df)))], {"pair": "tiny"})
    assert page.startswith("<!DOCTYPE html>") and "Mass moved" in page
