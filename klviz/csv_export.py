"""The token table as CSV for a spreadsheet: one value per cell, and no cell a spreadsheet would run.

A cell starting with =, +, -, @, a tab or a carriage return is read as a formula by Excel, LibreOffice
and Google Sheets ("CSV injection", OWASP: owasp.org/www-community/attacks/CSV_Injection); token
text is model output, so such a cell goes out prefixed with a single quote, which the spreadsheet
shows as plain text. Numbers are written as numbers (a negative log-ratio stays -0.25).
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet evaluate a text cell."""


def neutralise(cell):
    """A text cell a spreadsheet would run, prefixed with a quote; anything else as it is."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell


def table_csv_bytes(df: "pd.DataFrame") -> bytes:
    """UTF-8 CSV of `df`: list cells as "[a, b, ...]", text cells neutralised and quoted, no index."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    flat = df.copy()
    for col in flat.columns:  # text columns are object or (pandas 3) str dtype: anything not a number
        if is_numeric_dtype(flat[col]) or is_bool_dtype(flat[col]) or not len(flat):
            continue
        if not isinstance(flat[col].iloc[0], str):  # list columns -> "[a, b, ...]": one value per cell
            flat[col] = flat[col].map(lambda v: "[" + ", ".join(f"{float(x):.9g}" for x in v) + "]"
                                      if hasattr(v, "__len__") and not isinstance(v, str) else v)
        flat[col] = flat[col].map(neutralise).astype(object)
    buf = io.StringIO()
    flat.to_csv(buf, index=False, quoting=csv.QUOTE_NONNUMERIC)  # a CR inside a cell stays in its cell
    return buf.getvalue().encode()
