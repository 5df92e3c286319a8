"""A disk cache of unpacked checkpoints, so a .gguf is dequantized and a .zip unpacked only once.

    folder = cached(path, "gguf-float32", write)   # write(tmp_folder) runs only on a miss

Entries are keyed by the source file's SHA-256 (its bytes, not its name or time: a file replaced
in place is a new entry) and a variant ("gguf-float32", "zip"), and live in one folder each:

    $KLVIZ_CACHE_DIR (default $XDG_CACHE_HOME/klviz, else ~/.cache/klviz)/<variant>-<sha256[:32]>/

An entry is written in a temporary folder beside it and renamed into place, so a crash never
leaves a half-written entry and two processes filling the same entry both end with a whole one.
After a write, the least recently used entries are removed until the cache holds at most
KLVIZ_CACHE_MAX_GB gibibytes (default 20; 0 turns the cache off). Clearing it by hand is
`rm -rf` of the folder; klviz rebuilds entries as needed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

DEFAULT_MAX_GB = 20.0
"""Cache size cap when KLVIZ_CACHE_MAX_GB is not set (a few dequantized ~1B models)."""
HASH_BLOCK = 2**22
"""Bytes read per hashing step (4 MiB)."""
TMP_PREFIX = ".tmp-"
"""Entries being written; never served, removed when older than STALE_TMP_S."""
STALE_TMP_S = 24 * 3600.0
"""A temporary entry this old belongs to a process that died: eviction removes it."""


def cache_dir() -> Path:
    """The cache folder (it may not exist yet): $KLVIZ_CACHE_DIR, else user_cache_dir()."""
    if os.environ.get("KLVIZ_CACHE_DIR"):
        return Path(os.environ["KLVIZ_CACHE_DIR"]).expanduser()
    return user_cache_dir()


def user_cache_dir() -> Path:
    """The per-user default: $XDG_CACHE_HOME/klviz, else ~/.cache/klviz."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "klviz"


def max_bytes() -> int:
    """The size cap in bytes from KLVIZ_CACHE_MAX_GB (0: caching off); a malformed value means the default."""
    try:
        gb = float(os.environ.get("KLVIZ_CACHE_MAX_GB", DEFAULT_MAX_GB))
    except ValueError:
        gb = DEFAULT_MAX_GB
    return max(0, int(gb * 2**30)) if gb == gb else int(DEFAULT_MAX_GB * 2**30)  # NaN: the default


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def cached(source: Path, variant: str, write: Callable[[Path], None], *,
           expected_bytes: int = 0) -> Path | None:
    """The cache entry for `source` under `variant`, written by `write(folder)` on a miss.

    Returns None when caching is off, the entry would not fit under the cap (`expected_bytes`),
    or the cache folder cannot be written: the caller then works from a temporary folder.
    """
    cap = max_bytes()
    if cap == 0 or expected_bytes > cap:
        return None
    root = cache_dir()
    entry = root / f"{variant}-{file_sha256(source)[:32]}"
    if entry.is_dir():
        os.utime(entry)  # recently used: evicted last
        return entry
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root))
    except OSError:
        return None
    try:
        write(tmp)
        try:
            tmp.rename(entry)
        except OSError:  # another process finished the same entry first
            if not entry.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    evict(root, cap, keep=entry)
    return entry


def evict(root: Path, cap: int, keep: Path | None = None) -> list[Path]:
    """Remove least recently used entries (and stale temporary ones) until the rest fit in `cap`."""
    now, removed, entries = time.time(), [], []
    for d in root.iterdir() if root.is_dir() else ():
        if not d.is_dir():
            continue
        if d.name.startswith(TMP_PREFIX):
            if now - d.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
            continue
        entries.append((d.stat().st_mtime, d, _size(d)))
    total = sum(size for _, _, size in entries)
    for _, d, size in sorted(entries, key=lambda e: e[0]):  # oldest use first
        if total <= cap:
            break
        if keep is not None and d == keep:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        total -= size
    return removed
