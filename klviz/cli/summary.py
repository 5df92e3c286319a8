"""`klviz summary TABLE [--json]`: the headline figures of a token table, for people or pipelines."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from klviz.errors import KlvizError
from klviz.io import read_metadata


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="a token table (.parquet) from klviz score, analyze or trajectory")
    p.add_argument("--json", action="store_true", help="print one JSON object (NaN as null) instead of a table")


def _finite(obj):
    """JSON has no NaN: figures of an empty group become null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def read_for_summary(path: Path):
    """The table's columns summary needs, and its metadata; one sentence if it is not a token table."""
    import pyarrow.parquet as pq

    from klviz.views.summary import columns_needed, missing_columns  # pandas: only for this command

    if not path.is_file():
        raise KlvizError(f"{path}: no such file." if not path.exists() else f"{path} is not a file.")
    try:
        names = pq.read_schema(path).names
    except Exception:
        raise KlvizError(f"{path} is not a parquet file.") from None
    missing = missing_columns(names)
    if missing:
        raise KlvizError(f"{path} is not a klviz token table: it has no {', '.join(missing)} column.")
    return pq.read_table(path, columns=columns_needed(names)).to_pandas(), read_metadata(path)


def run(args: argparse.Namespace) -> int:
    from klviz.views.summary import summary, to_text

    df, meta = read_for_summary(Path(args.table))
    s = summary(df, meta)
    print(json.dumps(_finite(s), indent=2) if args.json else to_text(s))
    return 0
