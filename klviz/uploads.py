"""Uploaded checkpoints on the server's disk: per session, unguessable, short-lived. No streamlit here.

    folder = session_folder(UPLOAD_ROOT)        # UPLOAD_ROOT/<32 hex chars>, mode 0700
    path = save_upload("policy.zip", data, folder)
    discard(path)                               # a refused upload goes at once
    remove_folder(folder)                       # the session ended: its uploads go
    cleanup(UPLOAD_ROOT)                        # at server start: what a crash left behind

Uploads used to sit at a predictable `$TMPDIR/klviz-uploads/<sha256[:20]>/<name>`, refused ones
included, forever (issue 13). Now each browser session writes into its own folder named by
`secrets.token_hex` (so no other user can name its files), the dashboard deletes an upload it
refuses, and the whole folder when the session ends; `cleanup` caps what survives a crash by age
and total size.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from klviz.errors import KlvizError
from klviz.io import atomic_path

UPLOAD_ROOT = Path(tempfile.gettempdir()) / "klviz-uploads"
"""Where the dashboard's session folders live."""
UPLOAD_TYPES = ("zip", "gguf")
"""File types the uploaders take."""
MAX_AGE_S = 24 * 3600.0
"""Session folders older than this (by mtime) are removed at start: their session cannot still be open."""
MAX_TOTAL_BYTES = 32 * 2**30
"""At start, the oldest session folders are removed until the rest hold at most this much."""


def session_folder(root: Path = UPLOAD_ROOT) -> Path:
    """A new, empty folder under `root` with an unguessable name, readable by this user only."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = root / secrets.token_hex(16)
    folder.mkdir(mode=0o700)
    return folder


def save_upload(name: str, data: bytes | BinaryIO, folder: Path) -> Path:
    """Write an uploaded checkpoint (.zip of an HF folder, or .gguf) into `folder`, atomically; KlvizError
    naming the upload, with nothing written, for another type. The file name is reduced to safe characters."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        raise KlvizError(f"{Path(name).name} is neither a .zip of a Hugging Face model folder nor a .gguf file: "
                         "upload one of those.")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[-120:].lstrip(".") or f"upload.{suffix}"
    target = folder / safe
    raw = data if isinstance(data, bytes) else data.read()
    with atomic_path(target) as tmp:
        tmp.write_bytes(raw)
    return target


def discard(path: str | Path) -> None:
    """Delete an upload (a file, or what was unpacked beside it) that was refused."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_folder(folder: str | Path) -> None:
    """Delete a session's upload folder and everything in it."""
    shutil.rmtree(folder, ignore_errors=True)


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def cleanup(root: Path = UPLOAD_ROOT, max_age_s: float = MAX_AGE_S, max_total_bytes: int = MAX_TOTAL_BYTES,
            now: float | None = None) -> list[Path]:
    """Remove session folders older than `max_age_s`, then the oldest until the rest fit in `max_total_bytes`.
    Returns what was removed. Only folders with a session folder's name are touched."""
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    folders = sorted((p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"[0-9a-f]{32}", p.name)),
                     key=lambda p: p.stat().st_mtime)
    removed, kept = [], []
    for p in folders:
        (removed if now - p.stat().st_mtime > max_age_s else kept).append(p)
    sizes = {p: _size(p) for p in kept}
    total = sum(sizes.values())
    for p in kept:  # oldest first
        if total <= max_total_bytes:
            break
        removed.append(p)
        total -= sizes[p]
    for p in removed:
        remove_folder(p)
    return removed
