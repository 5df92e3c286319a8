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
    return pq.read_table(path).to_pandas(), read_metadata(path)


def table_decoder(df: pd.DataFrame, meta: Mapping[str, str]) -> Callable[[int], str]:
    """decode(token id) -> text for a table without a tokenizer: its vocabulary map, or (for a table
    written before tables carried one) the text of its own response tokens; "<id N>" for any other id."""
    decode = decoder_from_metadata(meta)
    if decode is not None:
        return decode
    known = dict(zip(df["token_id"].astype(int), df["token"].astype(str))) if len(df) else {}
    return lambda t: known.get(int(t), f"<id {int(t)}>")
