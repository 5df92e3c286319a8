"""The token table and figures as downloadable files: parquet (with the view's metadata), CSV, HTML.

No streamlit here: klviz/app/downloads.py calls these only when a download button is clicked.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from klviz.io import write_table

if TYPE_CHECKING:
    import pandas as pd


def parquet_bytes(df: pd.DataFrame, meta: dict) -> bytes:
    """The table as parquet, `meta` stored as the file's klviz metadata (klviz.io.write_table)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tokens.parquet"
        write_table(df, path, {k: str(v) for k, v in meta.items()})
        return path.read_bytes()


def csv_bytes(df: pd.DataFrame) -> bytes:
    """The table as CSV; list columns (the band sums) become "[a, b, ...]", one value per cell."""
    flat = df.copy()
    for col in flat.columns:
        if flat[col].dtype == object and len(flat) and not isinstance(flat[col].iloc[0], str):
            flat[col] = flat[col].map(lambda v: "[" + ", ".join(f"{float(x):.9g}" for x in v) + "]"
                                      if hasattr(v, "__len__") else v)
    buf = io.StringIO()
    flat.to_csv(buf, index=False)
    return buf.getvalue().encode()


def report_bytes(title: str, figures: Callable[[], list], info: dict, df: pd.DataFrame | None = None) -> bytes:
    """An HTML report (klviz.views.report) of the [(name, figure)] that `figures()` returns, opening
    with the headline figures of the token table `df` (klviz.views.tables.headline) when given."""
    from klviz.views.report import report_html
    from klviz.views.tables import headline

    return report_html(title, figures(), info, headline=headline(df) if df is not None else None).encode()
