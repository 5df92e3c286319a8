"""The shipped cache of the dashboard's default view: the sample pair's token table under the default
SamplingSettings, stored in sample_data/ so the first chart needs neither torch nor a live analysis
(the figures: bench/RESULTS.md).

sample_data/dashboard_table.parquet is written by the very call the dashboard makes
(`klviz.sampling.settings_table`) and keyed (`warm_key`) by everything that determines it: the SHA-256
of both checkpoints and of the prompts file, the settings, device, dtype, top-k, batch and the klviz
version; it is used only when the whole key matches. sample_data/dashboard_view.json holds what the
Overview draws of it under the same key, so the first chart is sent before pandas loads.
`python -m klviz.sample.make` writes both; tests/integration/test_warm_table.py recomputes the table
and checks it against a float64 brute force, so it cannot go stale unnoticed.

No torch and no pandas at import: the dashboard reads this before either has loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from klviz import __version__
from klviz.io import atomic_path, read_metadata, write_table
from klviz.settings import ANALYSIS_BATCH, DEFAULT_PROMPTS, TOP_K, SamplingSettings

if TYPE_CHECKING:
    import pandas as pd

WARM_TABLE = "dashboard_table.parquet"  # in the sample folder, beside the checkpoints
WARM_VIEW = "dashboard_view.json"  # the Overview's figures of that table, read without pandas
VIEW_BAND_COLUMNS = ("label", "mass_gained", "mass_lost", "kl_reverse", "kl_forward")
WARM_PAIR = ("policy", "sft")  # the shipped pair it belongs to, as folders of the sample folder


def content_hash(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and bytes, in sorted order)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if f != path else b"")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def warm_key(policy: str | Path, sft: str | Path, prompts: str | Path, settings: SamplingSettings,
             hashes=content_hash) -> str:
    """The key of a default-view table: contents, settings (prompts by content), CPU float32, top-k, version."""
    parts = {"policy": hashes(policy), "sft": hashes(sft), "prompts": hashes(prompts),
             "settings": {**asdict(settings), "prompts": None}, "device": "cpu", "dtype": "float32",
             "top_k": TOP_K, "batch": ANALYSIS_BATCH, "klviz": __version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def runs_on_cpu_float32(device: str, dtype: str) -> bool:
    """Whether the dashboard's device and dtype choice loads a pair on the CPU in float32.

    Answered without importing torch where the installed build is a CPU-only one ("+cpu").
    """
    if device not in ("auto", "cpu") or dtype not in ("auto", "float32"):
        return False
    if device == "cpu":
        return True
    if "torch" not in sys.modules:
        try:
            if importlib.metadata.version("torch").endswith("+cpu"):
                return True
        except importlib.metadata.PackageNotFoundError:
            pass
    from klviz.device import resolve_device

    return resolve_device("auto").type == "cpu"


def read_warm_table(path: str | Path, key: str) -> pd.DataFrame | None:
    """The table stored at `path` if it was written under `key`, else None."""
    path = Path(path)
    if not path.is_file() or read_metadata(path).get("warm_key") != key:
        return None
    import pandas as pd

    return pd.read_parquet(path)


def overview_view(df: pd.DataFrame) -> dict:
    """What the Overview draws of a token table, as JSON types: {"headline": tables.headline(df),
    "bands": {column: list} of tables.band_totals(df)} (per token; KL(policy || SFT) is kl_reverse)."""
    from klviz.views import tables

    bands = tables.band_totals(df)
    return {"headline": tables.headline(df), "bands": {c: bands[c].tolist() for c in VIEW_BAND_COLUMNS}}


def read_warm_view(path: str | Path, key: str) -> dict | None:
    """The Overview's figures stored at `path` (see `overview_view`) if written under `key`, else None."""
    try:
        view = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return view if isinstance(view, dict) and view.get("warm_key") == key else None


def write_warm_table(sample_dir: str | Path) -> Path:
    """Compute the default view's table of the sample pair in `sample_dir` (CPU, float32) and store it
    there, with the Overview's figures of it beside it (WARM_VIEW)."""
    from klviz.models import load_pair
    from klviz.prompts import read_prompts
    from klviz.sampling import settings_table

    sample_dir = Path(sample_dir)
    policy, sft = (sample_dir / name for name in WARM_PAIR)
    prompts = sample_dir / Path(DEFAULT_PROMPTS).name
    settings = SamplingSettings()
    pair = load_pair(str(policy), str(sft), device="cpu", dtype="float32")
    df = settings_table(pair, read_prompts(str(prompts)), settings)
    key = warm_key(policy, sft, prompts, settings)
    out = sample_dir / WARM_TABLE
    write_table(df, out, {"warm_key": key, "settings": json.dumps(asdict(settings)), "version": __version__})
    view = sample_dir / WARM_VIEW
    with atomic_path(view) as tmp:
        tmp.write_text(json.dumps({"warm_key": key, **overview_view(df)}, indent=1) + "\n")
    for path in (out, view):  # shipped, readable files (an atomic write's temporary file starts private)
        path.chmod(0o644)
    return out
