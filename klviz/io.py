"""Files in and out: JSONL reading with line-numbered errors, atomic writes, token tables.

pandas and pyarrow load on first use: the dashboard's first view imports this module without them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from klviz.errors import KlvizError

if TYPE_CHECKING:
    import pandas as pd

METADATA_PREFIX = "klviz."


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file: one object per non-blank line. Errors name the file and the line."""
    path = Path(path)
    if not path.exists():
        raise KlvizError(f"{path}: no such file.")
    if path.is_dir():
        raise KlvizError(f"{path} is a folder, not a JSONL file.")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise KlvizError(f"{path}, line {lineno}: not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict):
                raise KlvizError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}.")
            row["_line"] = lineno
            rows.append(row)
    if not rows:
        raise KlvizError(f"{path} is empty: it needs at least one JSON line.")
    return rows


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    So an interrupted or failed command never leaves a half-written output behind.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise KlvizError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | Path, shown: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; swap it into place only if the block succeeds.

    The old folder (if any) is renamed aside first and deleted after, so a failed save leaves the
    previous one whole. `shown` names the folder in the error (default: its name, never a server path).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KlvizError(f"Cannot save to {shown or path.name}: it is a file, not a folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_table(df: pd.DataFrame, path: str | Path, metadata: dict[str, str]) -> None:
    """Write a token table as parquet, atomically, with `metadata` in the file's key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.update({(METADATA_PREFIX + k).encode(): str(v).encode() for k, v in metadata.items()})
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The klviz key-value metadata of a parquet token table (prefix stripped)."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    n = len(METADATA_PREFIX)
    return {k.decode()[n:]: v.decode() for k, v in raw.items() if k.decode().startswith(METADATA_PREFIX)}
