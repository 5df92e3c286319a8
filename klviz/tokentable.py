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
