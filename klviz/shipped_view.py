"""The dashboard's default view, and its warm start: that view's token table, shipped with the samples.

Opening the dashboard shows the sample pair with the default sampling settings: responses sampled
and scored by `klviz.sampling.analyze`. On a fresh server that first needs torch and transformers
imported (about 4 s on 2 CPU cores) and then about 1 s of sampling and scoring, so the first chart
took 6-8 s. sample_data/dashboard_table.parquet holds that table, written by the very call the
dashboard makes (`default_table`), and keyed by everything that determines it: the SHA-256 of both
checkpoints' files and of the prompts file, the sampling settings, device, dtype, top-k and the
klviz version (`warm_key`). The dashboard draws it only when every part of the key matches (and
loads the pair after the page is drawn); anything else is computed. `python -m klviz.sample.make`
writes it with the rest of the sample data; tests/integration/test_warm_table.py computes it again
and compares, and checks its rows against a float64 brute force, so it cannot go stale unnoticed.

Beside it, sample_data/dashboard_view.json holds what the Overview draws of that table (the
headline figures and the band totals, as `klviz.views.tables` computes them) under the same key, so the
first chart is sent before pandas has loaded; the table itself is read after it (downloads, other
pages).

No torch and no pandas at import: the dashboard reads this before either has loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from klviz import __version__
from klviz.io import atomic_path, read_metadata, write_table

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_PROMPTS = "sample_data/prompts.jsonl"
# 24 new tokens: the sample reviews are 10-40 tokens, and at 24 a live analysis of the sample pair
# (all prompts x 4 samples, sampled and scored on 2 CPU cores) takes about a second.
DEFAULT_MAX_NEW_TOKENS = 24
# Sequences per generate/score batch in the app: on a CPU, few large batches beat many small ones
# (the sample pair's default analysis: ~0.5 s at 64-128 against ~1-5 s at 16 on 2 busy cores).
ANALYSIS_BATCH = 64
TOP_K = 10  # top-k gained and lost tokens per position in the dashboard's tables
WARM_TABLE = "dashboard_table.parquet"  # in the sample folder, beside the checkpoints
WARM_VIEW = "dashboard_view.json"  # the Overview's figures of that table, read without pandas
VIEW_BAND_COLUMNS = ("label", "mass_gained", "mass_lost", "kl_reverse", "kl_forward")
WARM_PAIR = ("policy", "sft")  # the shipped pair it belongs to, as folders of the sample folder


@dataclass(frozen=True)
class SamplingSettings:
    """The sidebar's sampling settings (every field keys the analysis cache)."""

    prompts: str = DEFAULT_PROMPTS
    n_prompts: int = 0  # 0: all
    samples_per_prompt: int = 4
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 1.0
    seed: int = 0
    sample_from: str = "policy"


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


def default_table(pair, prompts: list, settings: SamplingSettings, progress: bool = False) -> pd.DataFrame:
    """The token table the dashboard shows for `settings`: sampled and scored by `analyze` (tqdm bars on
    stderr with `progress`: the dashboard's worker reads them, klviz.analysis_job)."""
    from klviz.sampling import SamplingConfig, analyze

    cfg = SamplingConfig(samples_per_prompt=settings.samples_per_prompt,
                         max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                         seed=settings.seed, sample_from=settings.sample_from, batch_size=ANALYSIS_BATCH)
    return analyze(pair, prompts, cfg, top_k=TOP_K, progress=progress)


def write_warm_table(sample_dir: str | Path) -> Path:
    """Compute the default view's table of the sample pair in `sample_dir` (CPU, float32) and store it
    there, with the Overview's figures of it beside it (WARM_VIEW)."""
    from klviz.models import load_pair
    from klviz.prompts import read_prompts

    sample_dir = Path(sample_dir)
    policy, sft = (sample_dir / name for name in WARM_PAIR)
    prompts = sample_dir / Path(DEFAULT_PROMPTS).name
    settings = SamplingSettings()
    pair = load_pair(str(policy), str(sft), device="cpu", dtype="float32")
    df = default_table(pair, read_prompts(str(prompts)), settings)
    key = warm_key(policy, sft, prompts, settings)
    out = sample_dir / WARM_TABLE
    write_table(df, out, {"warm_key": key, "settings": json.dumps(asdict(settings)), "version": __version__})
    view = sample_dir / WARM_VIEW
    with atomic_path(view) as tmp:
        tmp.write_text(json.dumps({"warm_key": key, **overview_view(df)}, indent=1) + "\n")
    for path in (out, view):  # shipped, readable files (an atomic write's temporary file starts private)
        path.chmod(0o644)
    return out
