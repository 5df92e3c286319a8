"""Download buttons (token table as parquet and CSV, an HTML report) and what the files say they show."""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import TYPE_CHECKING, Callable

import streamlit as st

from klviz import shipped_view
from klviz.app import data, opened
from klviz.app.feedback import user_errors
from klviz.app.view import current
from klviz.pairs import sample_file
from klviz.views.export import csv_bytes, parquet_bytes, report_bytes

if TYPE_CHECKING:
    import pandas as pd


def table_later() -> Callable[[], pd.DataFrame]:
    """The current token table, as a callable for downloads built on click.

    On the default view it reads the shipped table only when called, so the run that sends the first
    chart stays light while this process serves plotly.js (bench/RESULTS.md). Otherwise the table is
    loaded (cached) now.
    """
    key = current().shipped_key
    if key is not None:
        return functools.partial(shipped_view.read_warm_table, sample_file(shipped_view.WARM_TABLE), key)
    if current().table is not None:  # an opened table: its full read only on click (klviz.app.opened)
        return functools.partial(opened.rows, current().table, current().step)
    df = data.require_table()
    return lambda: df


def meta() -> dict[str, str]:
    """What the current view shows: the pair and the sampling settings (for reports and files)."""
    cur = current()
    if cur.table is not None:
        with user_errors(stop=True):
            info = {k: v for k, v in opened.meta(cur.table).items() if k != "vocab"}  # the report lists the rest
        return {"table": cur.table.shown, "step": str(cur.step), **info}
    src = cur.source  # paths as the user gave them (an upload's file name), never the server's
    out = {"pair": src.label if src else "", "policy": src.explain(src.policy) if src else "",
           "sft": src.explain(src.sft) if src else ""}
    if cur.pair is not None:
        out.update(device=str(cur.pair.device), dtype=str(cur.pair.dtype))
    elif cur.shipped is not None:  # the shipped default table, computed on the CPU in float32
        out.update(device="cpu", dtype="torch.float32")
    out.update({k: str(v) for k, v in asdict(cur.settings).items()})
    return out


def downloads(table: pd.DataFrame | Callable[[], pd.DataFrame], title: str, figures) -> None:
    """Download buttons: the token table (parquet, CSV) and an HTML report of `figures`.

    `table` is the token table or a callable returning it (`table_later`); `figures` is a callable
    returning [(name, figure)]. Every file is built only when clicked.
    """
    df = table if callable(table) else (lambda: table)
    info = meta()
    cols = st.columns(3)
    cols[0].download_button("Token table (parquet)", lambda: parquet_bytes(df(), info),
                            file_name="klviz_tokens.parquet", mime="application/octet-stream",
                            on_click="ignore", icon=":material/download:")
    cols[1].download_button("Token table (CSV)", lambda: csv_bytes(df()), file_name="klviz_tokens.csv",
                            mime="text/csv", on_click="ignore", icon=":material/download:")
    cols[2].download_button("HTML report", lambda: report_bytes(title, figures, info, df()),
                            file_name="klviz_report.html", mime="text/html", on_click="ignore",
                            icon=":material/download:")
