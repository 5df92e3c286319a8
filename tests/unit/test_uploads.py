"""Uploads: unguessable per-session folders, refused ones deleted, crash leftovers capped (klviz.uploads)."""

import os

import pytest

from klviz.errors import KlvizError
from klviz.uploads import cleanup, discard, remove_folder, save_upload, session_folder


def test_session_folders_are_unguessable_and_private(tmp_path):
    a, b = session_folder(tmp_path), session_folder(tmp_path)
    assert a != b and len(a.name) == 32 and int(a.name, 16) >= 0
    assert (a.stat().st_mode & 0o777) == 0o700


def test_refused_type_writes_nothing_and_refused_upload_is_discarded(tmp_path):
    folder = session_folder(tmp_path)
    with pytest.raises(KlvizError, match=r"^evil\.sh is neither"):
        save_upload("../../evil.sh", b"#!/bin/sh", folder)
    assert list(folder.iterdir()) == []
    path = save_upload("../weird name.zip", b"not a zip", folder)
    assert path.parent == folder and path.name == "weird_name.zip" and path.read_bytes() == b"not a zip"
    discard(path)  # the loader refused it
    assert list(folder.iterdir()) == []
    save_upload("p.gguf", b"GGUF", folder)
    remove_folder(folder)  # the session ended
    assert not folder.exists()


def test_cleanup_by_age_then_total_size(tmp_path):
    old, mid, new = (session_folder(tmp_path) for _ in range(3))
    for folder, size, age in ((old, 10, 100_000), (mid, 60, 500), (new, 60, 10)):
        (folder / "x.zip").write_bytes(b"x" * size)
        t = 1_000_000 - age
        os.utime(folder, (t, t))
    (tmp_path / "not-a-session").mkdir()
    removed = cleanup(tmp_path, max_age_s=86_400, max_total_bytes=100, now=1_000_000)
    assert removed == [old, mid] and new.exists() and (tmp_path / "not-a-session").exists()
