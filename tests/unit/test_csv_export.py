"""CSV downloads: formula-like text cells neutralised, numbers and lists kept (klviz.csv_export)."""

import io

import pandas as pd

from klviz.csv_export import table_csv_bytes


def test_formula_cells_are_neutralised_and_numbers_kept():
    df = pd.DataFrame({"token": ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "\tTab", "\rCR", "plain", "a=b"],
                       "log_ratio": [-0.25, 0.5, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0],
                       "top": [[-0.5, 1.0]] * 8})
    back = pd.read_csv(io.BytesIO(table_csv_bytes(df)), keep_default_na=False)
    assert back["token"].tolist() == ["'=HYPERLINK(\"x\")", "'+1", "'-2", "'@SUM(A1)", "'\tTab", "'\rCR", "plain", "a=b"]
    assert back["log_ratio"].tolist() == df["log_ratio"].tolist()  # numbers stay numbers, minus sign included
    assert back["top"].tolist() == ["[-0.5, 1]"] * 8  # a list column is text, starting with "["
