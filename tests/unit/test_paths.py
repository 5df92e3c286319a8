"""Typed paths resolve only inside the allowed roots (klviz.paths), quickly, and name what was typed."""

import os
import time
from pathlib import Path

import pytest

from klviz import paths
from klviz.errors import KlvizError
from klviz.paths import Roots, fingerprint


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "ckpt").mkdir(parents=True)
    (root / "ckpt" / "config.json").write_text("{}")
    (root / "prompts.txt").write_text("hi\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    return root, outside


def _refused(roots, typed, base, match, **kw):
    start = time.monotonic()
    with pytest.raises(KlvizError, match=match) as e:
        roots.resolve(typed, base, **kw)
    assert time.monotonic() - start < 1.0
    msg = str(e.value)
    assert repr(typed.strip()) in msg and "\n" not in msg  # names what was typed, one sentence
    return msg


def test_inside_resolves_relative_and_absolute(tree):
    root, _ = tree
    roots = Roots.of(root)
    assert roots.resolve("ckpt", root) == root / "ckpt"
    assert roots.resolve(str(root / "prompts.txt"), "/", text_file=True) == root / "prompts.txt"
    assert roots.resolve("  ckpt/../prompts.txt ", root) == root / "prompts.txt"  # .. that stays inside


def test_outside_dotdot_symlink_home_usr_are_refused(tree):
    root, outside = tree
    roots = Roots.of(root)
    (root / "link").symlink_to(outside)
    (root / "filelink.txt").symlink_to(outside / "secret.txt")
    for typed in ("../outside/secret.txt", "link/secret.txt", "filelink.txt", str(outside / "secret.txt"),
                  "~", "/usr", "/etc/passwd"):
        msg = _refused(roots, typed, root, "outside the allowed folders")
        assert str(outside) not in msg.replace(repr(typed), "")  # the resolved server path is never shown


def test_devices_fifos_and_sockets_are_refused_without_opening(tree, tmp_path):
    root, _ = tree
    os.mkfifo(root / "fifo")  # opening it for reading would block forever
    roots = Roots.of(root, "/dev")
    _refused(roots, "fifo", root, "device, FIFO or socket")
    _refused(roots, "/dev/zero", root, "device, FIFO or socket")
    _refused(Roots.of(root), "/dev/zero", root, "outside the allowed folders")


def test_missing_empty_folder_as_text_and_big_text(tree, monkeypatch):
    root, _ = tree
    roots = Roots.of(root)
    _refused(roots, "nope", root, "no such file")
    _refused(roots, "ckpt", root, "is a folder", text_file=True)
    monkeypatch.setattr(paths, "MAX_TEXT_BYTES", 2)
    _refused(roots, "prompts.txt", root, "larger than", text_file=True)
    with pytest.raises(KlvizError, match="empty"):
        roots.resolve("  ", root)


def test_fingerprint_changes_with_the_folder_and_walks_once(tree, monkeypatch):
    root, _ = tree
    first = fingerprint(root / "ckpt")
    walks = []
    real_walk = paths._walk
    monkeypatch.setattr(paths, "_walk", lambda *a: walks.append(a) or real_walk(*a))
    assert fingerprint(root / "ckpt") == first and not walks  # same choice, same rerun: no walk
    (root / "ckpt" / "model.safetensors").write_bytes(b"x")
    assert fingerprint(root / "ckpt") != first and len(walks) == 1
    assert fingerprint(root / "missing") == "missing"


def test_fingerprint_of_a_huge_tree_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "MAX_FILES", 50)
    huge = tmp_path / "huge"
    for d in range(20):
        (huge / str(d)).mkdir(parents=True)
        for f in range(20):
            (huge / str(d) / str(f)).write_text("x")
    start = time.monotonic()
    with pytest.raises(KlvizError, match="more than 50 files"):
        fingerprint(huge, shown="~")
    assert time.monotonic() - start < 1.0
    os.mkfifo(tmp_path / "withfifo")
    with pytest.raises(KlvizError, match="FIFO"):
        fingerprint(tmp_path / "withfifo", shown="withfifo")
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "pipe")
    with pytest.raises(KlvizError, match="FIFO"):
        fingerprint(tmp_path / "d", shown="d")


def test_symlink_loop_is_walked_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    assert len(fingerprint(tmp_path / "a")) == 16
    assert Path(tmp_path / "a").exists()
