"""Paths typed in the browser: resolved only inside the folders the server's owner allowed. No streamlit.

    roots = Roots.of(cwd, [sample_dir, uploads, saved], server_options.current().data_roots)
    path = roots.resolve("sample_data/sft", base=repo)      # a Path, or KlvizError naming what was typed
    key = fingerprint(path)                                   # bounded walk, once per change of the choice

The browser is untrusted. A typed path is expanded (`~`), made absolute against `base`, and every
symlink and `..` resolved (os.path.realpath) before it is checked, so a link inside a root that
points outside it is refused like the outside path itself. Devices, FIFOs and sockets are refused
without being opened (`/dev/zero` once drove the server to 20 GB: zipfile.is_zipfile read it).
A folder is walked (to fingerprint it, so a changed checkpoint reloads) at most once per change of
its own inode/mtime, and never past MAX_FILES files or MAX_BYTES bytes: `~` or `/usr` would
otherwise take half a minute, on every rerun. Every refusal is one sentence naming what the user
typed, never the resolved server path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from klviz.errors import KlvizError

MAX_FILES = 2_000
"""Most files a chosen folder may hold (an HF checkpoint has a dozen; sharded ones a few hundred)."""
MAX_BYTES = 256 * 2**30
"""Most bytes a chosen file or folder may hold (256 GiB: larger than any checkpoint a dashboard loads)."""
MAX_TEXT_BYTES = 64 * 2**20
"""Most bytes of a prompts or responses file (64 MiB)."""
ROOTS_SENTENCE = ("the dashboard opens only files in its working directory, sample_data/, the uploads folder "
                  "and the --data-root folders its owner started it with")


def _shown(typed: str) -> str:
    return repr(str(typed).strip())


@dataclass(frozen=True)
class Roots:
    """The folders whose files the page may open (resolved, symlinks followed)."""

    folders: tuple[Path, ...]

    @classmethod
    def of(cls, *groups: Iterable[str | Path] | str | Path) -> "Roots":
        """Roots from paths or iterables of paths (missing ones kept: an uploads folder may appear later)."""
        found: list[Path] = []
        for group in groups:
            items = [group] if isinstance(group, (str, Path)) else list(group)
            found += [Path(os.path.realpath(Path(p).expanduser())) for p in items]
        return cls(tuple(dict.fromkeys(found)))

    def contains(self, real: Path) -> bool:
        return any(real == r or real.is_relative_to(r) for r in self.folders)

    def resolve(self, typed: str, base: str | Path, *, text_file: bool = False) -> Path:
        """The real path of `typed` (relative to `base`) if it is inside a root and is a regular file or a
        folder; KlvizError naming `typed` otherwise. `text_file`: a regular file of at most MAX_TEXT_BYTES."""
        text = str(typed).strip()
        if not text:
            raise KlvizError("The path is empty: type a path or choose a file.")
        if "\0" in text:
            raise KlvizError(f"{_shown(text)} is not a path.")
        p = Path(text).expanduser()
        real = Path(os.path.realpath(p if p.is_absolute() else Path(base) / p))
        if not self.contains(real):
            raise KlvizError(f"{_shown(text)} is outside the allowed folders: {ROOTS_SENTENCE}.")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise KlvizError(f"{_shown(text)}: no such file or folder.") from None
        except OSError as e:
            raise KlvizError(f"{_shown(text)} cannot be read ({e.strerror}).") from None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise KlvizError(f"{_shown(text)} is not a regular file or folder (a device, FIFO or socket): "
                             "choose a checkpoint or a text file.")
        if text_file:
            if not stat.S_ISREG(st.st_mode):
                raise KlvizError(f"{_shown(text)} is a folder: choose a .jsonl or .txt file.")
            if st.st_size > MAX_TEXT_BYTES:
                raise KlvizError(f"{_shown(text)} is larger than {MAX_TEXT_BYTES // 2**20} MiB: "
                                 "use a smaller file.")
        elif st.st_size > MAX_BYTES:
            raise KlvizError(f"{_shown(text)} is larger than {MAX_BYTES // 2**30} GiB.")
        return real


def fingerprint(path: str | Path, shown: str | None = None) -> str:
    """A short hash of the names, sizes and mtimes of the files at `path`, walked at most once per change of
    the path's own inode, size or mtime (a file rewritten in place, or one added, renamed or removed at
    the top). KlvizError (naming `shown`) past MAX_FILES files or MAX_BYTES bytes, or for special files."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return _fingerprint(str(path), st.st_ino, st.st_size, st.st_mtime_ns, shown or Path(path).name)


@functools.lru_cache(maxsize=256)
def _fingerprint(path: str, ino: int, size: int, mtime_ns: int, shown: str) -> str:
    h = hashlib.sha1()
    n_files = n_bytes = 0
    for rel, st in _walk(Path(path), shown):
        n_files, n_bytes = n_files + 1, n_bytes + st.st_size
        if n_files > MAX_FILES:
            raise KlvizError(f"{_shown(shown)} holds more than {MAX_FILES} files: choose a checkpoint folder.")
        if n_bytes > MAX_BYTES:
            raise KlvizError(f"{_shown(shown)} holds more than {MAX_BYTES // 2**30} GiB: choose a checkpoint folder.")
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _walk(root: Path, shown: str):
    """(relative name, stat) of every regular file under `root` (or of `root` itself), sorted; symlinks followed,
    special files refused."""
    st = os.stat(root)
    if stat.S_ISREG(st.st_mode):
        yield root.name, st
        return
    if not stat.S_ISDIR(st.st_mode):
        raise KlvizError(f"{_shown(shown)} is not a regular file or folder (a device, FIFO or socket).")
    stack = [Path()]
    seen_dirs = {(st.st_dev, st.st_ino)}
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            try:
                est = entry.stat()  # follows symlinks
            except OSError:  # a dangling link: nothing to load there
                continue
            name = (rel / entry.name).as_posix()
            if stat.S_ISDIR(est.st_mode):
                if (est.st_dev, est.st_ino) not in seen_dirs:  # a symlink loop is walked once
                    seen_dirs.add((est.st_dev, est.st_ino))
                    stack.append(rel / entry.name)
            elif stat.S_ISREG(est.st_mode):
                yield name, est
            else:
                raise KlvizError(f"{_shown(shown)} contains a device, FIFO or socket: choose a checkpoint folder.")
