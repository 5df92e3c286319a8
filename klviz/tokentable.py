"""A token table that carries what it needs to be read without models: the text of every token id it
names (response tokens and the top gained/lost entries) and, in its metadata, how it was made.

    meta = table_metadata(pair, command="score", top_k=10)
    meta.update(vocab_metadata(df, tokenizer))     # {"vocab": '{"17": " good", ...}'}
    decode = decoder_from_metadata(read_metadata(path))   # token id -> text, no tokenizer

No torch and no streamlit here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from klviz.engine.columns import BAND_COLUMNS, BAND_EDGES, N_BANDS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

VOCAB_KEY = "vocab"
"""Metadata key of the JSON map {token id: decoded text} for every id the table names."""
ID_LIST_COLUMNS = ("gained_top_ids", "lost_top_ids")


def table_metadata(pair, **extra) -> dict[str, str]:
    """What every token table records about how it was made: both models, dtype, device, bands, settings."""
    import klviz

    return {
        "version": klviz.__version__,
        "policy": str(pair.policy_info.path),
        "sft": str(pair.sft_info.path),
        "dtype": str(pair.dtype).replace("torch.", ""),
        "device": str(pair.device),
        "band_edges": ",".join(repr(e) for e in BAND_EDGES),
        **{k: str(v) for k, v in extra.items()},
    }


def token_ids_named(df: pd.DataFrame) -> set[int]:
    """Every token id the table names: its tokens and their top gained/lost entries."""
    import numpy as np

    ids = set(int(t) for t in df["token_id"].unique()) if "token_id" in df.columns else set()
    for col in ID_LIST_COLUMNS:
        if col in df.columns and len(df):
            ids |= set(int(t) for t in np.unique(np.concatenate([np.asarray(v) for v in df[col]])))
    return ids


def vocab_map(df: pd.DataFrame, tokenizer) -> dict[int, str]:
    """{id: text} for every id the table names, decoded one token at a time."""
    return {t: tokenizer.decode([t], clean_up_tokenization_spaces=False) for t in sorted(token_ids_named(df))}


def vocab_entry(vocab: Mapping[int, str]) -> dict[str, str]:
    """{VOCAB_KEY: JSON {id: text}}, ids ascending: the same bytes whether `vocab` was decoded from the
    whole table or merged from its parts' vocab_map (`klviz score --ray`: one per actor batch)."""
    return {VOCAB_KEY: json.dumps({str(t): vocab[t] for t in sorted(vocab)}, ensure_ascii=False)}


def vocab_metadata(df: pd.DataFrame, tokenizer) -> dict[str, str]:
    """{VOCAB_KEY: JSON {id: text}} for every id the table names, decoded one token at a time."""
    return vocab_entry(vocab_map(df, tokenizer))


def vocab_from_metadata(meta: Mapping[str, str]) -> dict[int, str] | None:
    """The table's {token id: text}, or None for a table written before tables carried it."""
    raw = meta.get(VOCAB_KEY)
    return None if raw is None else {int(k): v for k, v in json.loads(raw).items()}


def decoder_from_metadata(meta: Mapping[str, str]) -> Callable[[int], str] | None:
    """decode(token id) -> text from the table's own vocabulary map (None if it has none).

    An id the map lacks shows as "<id N>" rather than failing: a table only names the ids it holds.
    """
    vocab = vocab_from_metadata(meta)
    if vocab is None:
        return None
    return lambda t: vocab.get(int(t), f"<id {int(t)}>")


REQUIRED = ("prompt_id", "sample_id", "position", "token_id", "token", "kl_reverse", "kl_forward", "tv",
            "entropy_policy", "entropy_sft", "logp_policy", "logp_sft", "mass_gained_by_sft_bin",
            "mass_lost_by_sft_bin", "kl_reverse_by_sft_bin", "kl_forward_by_sft_bin")
"""Columns a parquet must have for the dashboard to open it as a token table."""
_ROW = "__klviz_row"  # LightTable.at_step's temporary column: each row's number


def _open_checked(path, shown: str | None):
    """(pyarrow ParquetFile, its klviz metadata) of a token table; one sentence naming `shown` (default:
    the path) when it is not one.

    pq.ParquetFile, not pq.read_table: read_table goes through pyarrow.dataset, whose import alone took
    0.6 s on a quiet box and 3.5 s at load 14 in a fresh server's first session (bench/open_table.py)."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from klviz.errors import KlvizError
    from klviz.io import read_metadata

    path, shown = Path(path), shown or str(path)
    if not path.is_file():
        raise KlvizError(f"{shown}: no such file." if not path.exists() else f"{shown} is not a file.")
    try:
        file = pq.ParquetFile(path)
        schema = file.schema_arrow
    except Exception:
        raise KlvizError(f"{shown} is not a parquet file.") from None
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        raise KlvizError(f"{shown} is not a klviz token table: it has no {', '.join(missing[:3])} column"
                         f"{'s' if len(missing) > 1 else ''}.")
    return file, read_metadata(path)


def read_token_table(path, shown: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """(table, klviz metadata) of a parquet token table; one sentence naming `shown` (default: the path)
    when it is not one. pandas and pyarrow only, no torch."""
    file, meta = _open_checked(path, shown)
    return file.read().to_pandas(), meta


@dataclass(frozen=True)
class LightTable:
    """What the Overview draws of a token table, read without the per-row arrays of its list columns
    (12 list columns of a 100k-row table are 1.2M numpy arrays in pandas: most of a full read's time).

    Equal to the full read (tests/unit/test_light_table.py): `frame` is read_token_table's frame without
    its list columns, and each `bands` matrix is tables._stack of that band column."""

    frame: pd.DataFrame
    """Every column of the table that is not a list column, row for row as read_token_table gives it."""
    bands: dict[str, np.ndarray] | None
    """BAND_COLUMNS -> Float[n, N_BANDS], row i = the frame's row i; None when a band column has null or
    ragged cells, or values that are not floats (then only the full read can say what they are)."""
    meta: dict[str, str]
    """The table's klviz metadata (klviz.io.read_metadata)."""

    def at_step(self, step: int) -> LightTable:
        """One checkpoint's rows (klviz.views.trajectory.at_step's, in its order) of the frame and the bands."""
        import numpy as np

        from klviz.views.trajectory import at_step

        frame = at_step(self.frame.assign(**{_ROW: np.arange(len(self.frame))}), step)  # row numbers ride along
        keep = frame.pop(_ROW).to_numpy()
        bands = None if self.bands is None else {col: m[keep] for col, m in self.bands.items()}
        return LightTable(frame, bands, self.meta)


def read_light_table(path, shown: str | None = None) -> LightTable:
    """The LightTable of a parquet token table: its scalar columns and band matrices only; the same
    sentence as read_token_table when it is not one."""
    import pyarrow as pa

    file, meta = _open_checked(path, shown)
    schema = file.schema_arrow
    nested = {f.name for f in schema if pa.types.is_nested(f.type)}
    scalars = [name for name in schema.names if name not in nested]
    table = file.read(columns=scalars + list(BAND_COLUMNS))
    bands = {c: _band_matrix(table.column(c)) for c in BAND_COLUMNS}
    return LightTable(table.select(scalars).to_pandas(), None if any(m is None for m in bands.values()) else bands,
                      meta)


def _band_matrix(column) -> np.ndarray | None:
    """A band list column -> Float[n, N_BANDS] float64 (what tables._stack makes of its pandas cells), or
    None unless every cell is a non-null list of N_BANDS floats."""
    import numpy as np
    import pyarrow as pa

    cells = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = cells.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) \
            or not pa.types.is_floating(kind.value_type) or cells.null_count:
        return None
    if pa.types.is_fixed_size_list(kind):
        if kind.list_size != N_BANDS:
            return None
    elif len(cells) and np.any(np.diff(cells.offsets.to_numpy()) != N_BANDS):  # offsets: n + 1, slice-aware
        return None
    values = cells.flatten()  # the cells' values end to end, respecting any slice offset
    # A null value (a NaN when the table was written from pandas) becomes NaN, as in to_pandas' cells.
    return values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False).reshape(len(cells), N_BANDS)


def table_decoder(df: pd.DataFrame, meta: Mapping[str, str]) -> Callable[[int], str]:
    """decode(token id) -> text for a table without a tokenizer: its vocabulary map, or (for a table
    written before tables carried one) the text of its own response tokens; "<id N>" for any other id."""
    decode = decoder_from_metadata(meta)
    if decode is not None:
        return decode
    known = dict(zip(df["token_id"].astype(int), df["token"].astype(str))) if len(df) else {}
    return lambda t: known.get(int(t), f"<id {int(t)}>")
