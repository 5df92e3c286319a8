"""An opened token table: a parquet from `klviz score`/`analyze`/`trajectory`, shown with no models.

The table comes from the server's start-up flags (`klviz dashboard TABLE ...`, klviz.server_options),
a path typed in the sidebar or an upload. It is read with klviz.tokentable, which needs neither torch nor
a tokenizer: token text comes from the table's own vocabulary map. It is read in two parts, each once per
file content: `light` (the scalar columns and the band columns as [n, 7] matrices: all the sidebar and
the Overview need, a tenth of a second for 100k rows), and, only when a page that needs the list columns
asks, the full frame (`read`: 12 list columns are 1.2M per-row arrays, seconds). Not in a background
thread after the first view: its conversion holds the GIL, and the server's event loop, serving plotly.js
to that first view, stalled behind it (first chart 20 s later at load 20, bench/open_table.py). Both are
held by st.cache_resource, shared and never mutated (the pages filter, never assign), not st.cache_data:
st.cache_data pickles a value when it stores it and unpickles it on every hit (for the full frame 26 s
to pickle, 8 s to unpickle on the 2-core box, per run). A checkpoint series
(`checkpoint`/`step` columns) shows one step at a time on every page but Trajectory; the step is the
sidebar's "Checkpoint step", which the Trajectory page can set.

Typed paths resolve against the server's working directory and must name a file inside it, the
repository, or a --data-root folder (issue 13's klviz/paths.py root checks were not on main yet).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import streamlit as st

from klviz import server_options
from klviz.errors import KlvizError

if TYPE_CHECKING:
    import pandas as pd

    from klviz.tokentable import LightTable

ROOT = Path(__file__).resolve().parents[2]
OPEN_TABLE = "Open a token table…"
TABLE_PREFIX = "Table: "


@dataclass(frozen=True)
class TableSource:
    """A token table to show."""

    label: str
    """How the sidebar names it."""
    path: str
    """The resolved file on the server."""
    shown: str
    """How errors name it (the user's own name for it, never another server path)."""


def allowed_roots() -> list[Path]:
    """Folders a typed path may point into: the working directory, the repository, the --data-root folders."""
    return [Path(os.getcwd()).resolve(), ROOT, *server_options.current().data_roots]


def resolve_typed(text: str) -> TableSource:
    """A typed path, resolved against the working directory, checked to lie inside an allowed root."""
    p = Path(text).expanduser()
    path = (p if p.is_absolute() else Path(os.getcwd()) / p).resolve()
    if not any(path == r or r in path.parents for r in allowed_roots()):
        raise KlvizError(f"{text} is outside the folders this dashboard may open (start it with --data-root DIR "
                         "to allow one).")
    if path.suffix.lower() != ".parquet":
        raise KlvizError(f"{text} is not a .parquet token table (klviz score, analyze or trajectory write one).")
    return TableSource(f"{TABLE_PREFIX}{path.name}", str(path), text)


def given_tables(opts: server_options.ServerOptions | None = None) -> dict[str, TableSource]:
    """The tables the server was started with (`opts`, by default this server's), by sidebar label."""
    return {f"{TABLE_PREFIX}{p.name}": TableSource(f"{TABLE_PREFIX}{p.name}", str(p), p.name)
            for p in (opts or server_options.current()).tables}


def _fingerprint(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        return "missing"
    s = p.stat()
    return hashlib.sha1(f"{p}:{s.st_size}:{s.st_mtime_ns}".encode()).hexdigest()[:16]


@st.cache_resource(max_entries=4, show_spinner="Reading the token table…")
def _read(path: str, shown: str, fingerprint: str) -> tuple[pd.DataFrame, dict[str, str]]:
    from klviz.tokentable import read_token_table

    return read_token_table(path, shown)


def read(source: TableSource) -> tuple[pd.DataFrame, dict[str, str]]:
    """(table, metadata), cached by the file's path, size and mtime. KlvizError when it is not a table."""
    return _read(source.path, source.shown, _fingerprint(source.path))


@st.cache_resource(max_entries=4, show_spinner="Reading the token table…")
def _light(path: str, shown: str, fingerprint: str) -> LightTable:
    from klviz.tokentable import read_light_table

    return read_light_table(path, shown)


def light(source: TableSource) -> LightTable:
    """The table's scalar columns, band matrices and metadata (klviz.tokentable.LightTable), cached like
    `read`; KlvizError when it is not a table."""
    return _light(source.path, source.shown, _fingerprint(source.path))


def meta(source: TableSource) -> dict[str, str]:
    """The table's klviz metadata (what made it)."""
    return light(source).meta


def steps(source: TableSource) -> list[int]:
    """The checkpoint steps of the table (empty unless it is a series), without the full read."""
    return series_steps(light(source).frame)


def table_key(source: TableSource, step: int | None) -> str:
    """Names the shown rows (for the pages' caches)."""
    return f"table:{source.path}:{_fingerprint(source.path)}:{step}"


def series_steps(df: pd.DataFrame) -> list[int]:
    """The checkpoint steps of a series (empty for a table of one model)."""
    from klviz.views.trajectory import is_series, steps_of

    return steps_of(df) if is_series(df) else []


@st.cache_resource(max_entries=8, show_spinner=False)
def _rows_at(key: str, step: int | None, _df: pd.DataFrame) -> pd.DataFrame:
    from klviz.views.trajectory import at_step

    return _df if step is None else at_step(_df, step)


def rows(source: TableSource, step: int | None) -> pd.DataFrame:
    """The rows the pages draw: the whole table, or one step of a series."""
    df, _ = read(source)
    return _rows_at(table_key(source, step), step, df)


@st.cache_data(max_entries=8, show_spinner=False)
def _overview(key: str, step: int | None, _light: LightTable, _source: TableSource) -> tuple[dict, pd.DataFrame]:
    from klviz.views import tables

    if _light.bands is None:  # null or ragged band cells: what the full frame makes of them
        df = rows(_source, step)
        return tables.headline(df), tables.band_totals(df)
    part = _light if step is None else _light.at_step(step)
    return tables.headline(part.frame), tables.band_means(part.bands)


def overview(source: TableSource, step: int | None) -> tuple[dict, pd.DataFrame]:
    """The Overview's (tables.headline, tables.band_totals) of the shown rows, from the light read (no
    per-row arrays), once per table and step (small values, so st.cache_data's copies cost nothing)."""
    return _overview(table_key(source, step), step, light(source), source)


@st.cache_resource(max_entries=4, show_spinner=False)
def _decoder(key: str, _df: pd.DataFrame, _meta: dict) -> Callable[[int], str]:
    from klviz.tokentable import table_decoder

    return table_decoder(_df, _meta)


def decoder(source: TableSource) -> Callable[[int], str]:
    """token id -> text from the table itself (no tokenizer)."""
    df, meta = read(source)
    return _decoder(table_key(source, None), df, meta)


def describe(meta: dict[str, str]) -> list[str]:
    """Caption lines: what made the table (its metadata), for the sidebar."""
    lines = [f"{k}: {meta[k]}" for k in ("command", "policy", "sft", "input", "input_format", "top_k", "dtype",
                                         "device") if meta.get(k)]
    return lines or ["(the table records nothing about how it was made)"]
