"""Which pair to load: the shipped sample pairs, a pair source and its cache key, uploads on disk.

No streamlit here: the app's sidebar (klviz/app/sidebar.py) builds a `PairSource` and keys the
loaded pair by `pair_key`, so a checkpoint whose files changed loads again.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from klviz import paths, uploads
from klviz.errors import KlvizError
from klviz.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PAIRS = {  # label -> (policy, sft), relative to the repository root
    "Sample: policy vs SFT": ("sample_data/policy", "sample_data/sft"),
    "Sample: policy_k3_loss vs SFT": ("sample_data/policy_k3_loss", "sample_data/sft"),
}
SAMPLE_DIR = "sample_data"
UPLOAD_TYPES = uploads.UPLOAD_TYPES
UPLOAD_ROOT = uploads.UPLOAD_ROOT  # per-session folders under it (klviz.uploads)
SAVED_ROOT = Path(tempfile.gettempdir()) / "klviz-saved-policies"


@dataclass(frozen=True)
class PairSource:
    """What to load: policy and SFT checkpoints (HF folder, .zip of one, LoRA adapter, .gguf)."""

    label: str
    """The name the pair picker shows."""
    policy: str
    """The policy checkpoint, as given (relative paths are under the repository root)."""
    sft: str
    """The SFT checkpoint, as given."""
    policy_base: str | None = None
    """The base model of a LoRA policy adapter, or None."""
    shown: tuple[tuple[str, str], ...] = ()
    """(saved path, name the user gave) of uploads, so error messages name the uploaded file."""

    def explain(self, message: str) -> str:
        """`message` as the page may show it: each saved path as the name the user gave, and paths under
        the repository (the shipped pairs) relative to it; never the server's folders."""
        for path, name in self.shown:
            message = message.replace(path, name)
        return message.replace(f"{ROOT}{os.sep}", "")


@dataclass(frozen=True)
class SavedPolicy:
    """A policy saved from a live PPO run, with the SFT checkpoint it was trained against."""

    label: str
    """The name the pair picker shows."""
    policy: str
    """The saved policy's folder."""
    sft: str
    """The SFT checkpoint it trained against, as the pair source gave it."""


def resolve(path: str) -> str:
    """`path` made absolute: relative paths are under the repository root."""
    p = Path(path).expanduser()
    return str((p if p.is_absolute() else ROOT / p).resolve())


def sample_file(name: str) -> str:
    """A file or folder of the shipped sample data, resolved."""
    return resolve(f"{SAMPLE_DIR}/{name}")


def fingerprint(path: str) -> str:
    """A short hash of the sizes and mtimes of the files at `path`: a changed checkpoint reloads. Bounded
    (file count, bytes) and walked once per change of the path (klviz.paths.fingerprint)."""
    return paths.fingerprint(path)


def pair_key(source: PairSource, device: str, dtype: str) -> str:
    """The cache key of a loaded pair: resolved paths, device, dtype and the files' fingerprints."""
    parts = [resolve(source.policy), resolve(source.sft), source.policy_base or "", device, dtype]
    parts += [fingerprint(resolve(p)) for p in (source.policy, source.sft, source.policy_base) if p]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def save_upload(name: str, data: bytes | BinaryIO, root: Path = UPLOAD_ROOT, types: tuple = UPLOAD_TYPES) -> Path:
    """Write an uploaded checkpoint (.zip of an HF folder, or .gguf) under `root`; returns its path.

    The folder is named by the content's hash, so the same upload is written once and loads from
    the cache; the file name is reduced to safe characters.
    """
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in types:
        raise KlvizError(f"{name} is neither a .zip of a Hugging Face model folder nor a .gguf file: "
                         "upload one of those." if types == UPLOAD_TYPES else
                         f"{name} is not a .{' or .'.join(types)} file: upload one of those.")
    raw = data if isinstance(data, bytes) else data.read()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[-120:]
    target = root / hashlib.sha256(raw).hexdigest()[:20] / safe
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(raw)
    return target
