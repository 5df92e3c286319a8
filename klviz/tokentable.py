"""A token table that carries what it needs to be read without models: the text of every token id it
names (response tokens and the top gained/lost entries) and, in its metadata, how it was made.

    meta = table_metadata(pair, command="score", top_k=10)
    meta.update(vocab_metadata(df, tokenizer))     # {"vocab": '{"17": " good", ...}'}
    decode = decoder_from_metadata(read_metadata(path))   # token id -> text, no tokenizer

No torch and no streamlit here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable, Mapping

from klviz.engine.columns import BAND_EDGES

if TYPE_CHECKING:
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


def vocab_metadata(df: pd.DataFrame, tokenizer) -> dict[str, str]:
    """{VOCAB_KEY: JSON {id: text}} for every id the table names, decoded one token at a time."""
    vocab = {str(t): tokenizer.decode([t], clean_up_tokenization_spaces=False)
             for t in sorted(token_ids_named(df))}
    return {VOCAB_KEY: json.dumps(vocab, ensure_ascii=False)}


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


def read_token_table(path, shown: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """(table, klviz metadata) of a parquet token table; one sentence naming `shown` (default: the path)
    when it is not one. pandas and pyarrow only, no torch."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from klviz.errors import KlvizError
    from klviz.io import read_metadata

    path, shown = Path(path), shown or str(path)
    if not path.is_file():
        raise KlvizError(f"{shown}: no such file." if not path.exists() else f"{shown} is not a file.")
    try:
        names = pq.read_schema(path).names
    except Exception:
        raise KlvizError(f"{shown} is not a parquet file.") from None
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise KlvizError(f"{shown} is not a klviz token table: it has no {', '.join(missing[:3])} column"
                         f"{'s' if len(missing) > 1 else ''}.")
    return arrow_to_frame(pq.read_table(path)), read_metadata(path)


def arrow_to_frame(table) -> pd.DataFrame:
    """A pyarrow Table -> the frame `table.to_pandas()` gives, cell for cell, without its per-row cost.

    to_pandas turns each list cell into its own numpy array (12 list columns x 100k rows of a token table);
    here a list column whose cells all have one length k becomes one read-only Float[n, k] (or Int[n, k])
    array over the column's flat values, each cell a view of its row: the same dtype, values and
    read-only flag as to_pandas's cells. Other list columns (nulls, ragged) go through to_pandas.
    """
    import pandas as pd

    lists = {name: _list_cells(table.column(name)) for name in table.column_names
             if _is_list(table.schema.field(name).type)}
    lists = {k: v for k, v in lists.items() if v is not None}
    df = table.drop_columns(list(lists)).to_pandas()
    for name, cells in lists.items():
        df[name] = pd.Series(cells, index=df.index, dtype=object, name=name)
    return df[table.column_names]


def _is_list(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _list_cells(column):
    """An object array of one read-only row view per cell of a fixed-width list column with no nulls;
    None when the cells differ in length or a cell or element is null (then to_pandas reads it)."""
    import numpy as np
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if arr.null_count or n == 0:
        return None
    offsets = np.asarray(arr.offsets) if not pa.types.is_fixed_size_list(arr.type) else None
    values = arr.flatten()  # honours the array's offset and each cell's start (a sliced array)
    if values.null_count or len(values) % n or (offsets is not None and
                                                 np.any(np.diff(offsets) != len(values) // n)):
        return None
    matrix = values.to_numpy(zero_copy_only=False).reshape(n, len(values) // n)  # [n, k]
    matrix.flags.writeable = False
    cells = np.empty(n, dtype=object)
    cells[:] = list(matrix)
    return cells


def table_decoder(df: pd.DataFrame, meta: Mapping[str, str]) -> Callable[[int], str]:
    """decode(token id) -> text for a table without a tokenizer: its vocabulary map, or (for a table
    written before tables carried one) the text of its own response tokens; "<id N>" for any other id."""
    decode = decoder_from_metadata(meta)
    if decode is not None:
        return decode
    known = dict(zip(df["token_id"].astype(int), df["token"].astype(str))) if len(df) else {}
    return lambda t: known.get(int(t), f"<id {int(t)}>")
