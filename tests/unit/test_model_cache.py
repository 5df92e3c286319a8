"""klviz.model_cache: entries keyed by content, written atomically, least recently used evicted first."""

import os

import pytest

from klviz import model_cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KLVIZ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KLVIZ_CACHE_MAX_GB", raising=False)
    return tmp_path / "cache"


def _source(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _writer(n_bytes: int, calls: list):
    def write(folder):
        calls.append(folder)
        (folder / "weights").write_bytes(bytes(n_bytes))
    return write


def test_an_entry_is_written_once_and_keyed_by_the_files_bytes(cache, tmp_path):
    calls = []
    a = model_cache.cached(_source(tmp_path, "a.gguf", b"same"), "gguf-float32", _writer(10, calls))
    b = model_cache.cached(_source(tmp_path, "b.gguf", b"same"), "gguf-float32", _writer(10, calls))
    c = model_cache.cached(_source(tmp_path, "c.gguf", b"other"), "gguf-float32", _writer(10, calls))
    d = model_cache.cached(tmp_path / "a.gguf", "gguf-bfloat16", _writer(10, calls))
    assert a == b and len({a, c, d}) == 3 and len(calls) == 3
    assert a.parent == cache and a.name.startswith("gguf-float32-") and (a / "weights").stat().st_size == 10
    assert not [p for p in cache.iterdir() if p.name.startswith(model_cache.TMP_PREFIX)]


def test_a_failed_write_leaves_no_entry(cache, tmp_path):
    def broken(folder):
        (folder / "half").write_bytes(b"x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        model_cache.cached(_source(tmp_path, "a.zip", b"z"), "zip", broken)
    assert list(cache.iterdir()) == []


def test_the_least_recently_used_entries_go_first_when_over_the_cap(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("KLVIZ_CACHE_MAX_GB", str(250 / 2**30))  # room for two 100-byte entries
    calls = []
    old = model_cache.cached(_source(tmp_path, "1", b"1"), "zip", _writer(100, calls))
    used = model_cache.cached(_source(tmp_path, "2", b"2"), "zip", _writer(100, calls))
    os.utime(old, (1, 1)), os.utime(used, (2, 2))
    assert model_cache.cached(tmp_path / "2", "zip", _writer(100, calls)) == used  # a hit: used just now
    new = model_cache.cached(_source(tmp_path, "3", b"3"), "zip", _writer(100, calls))
    assert sorted(p.name for p in cache.iterdir()) == sorted([used.name, new.name])
    assert len(calls) == 3


def test_zero_cap_turns_the_cache_off_and_a_too_big_entry_is_not_cached(cache, tmp_path, monkeypatch):
    src = _source(tmp_path, "a.gguf", b"a")
    assert model_cache.cached(src, "gguf-float32", _writer(1, []), expected_bytes=2**50) is None
    monkeypatch.setenv("KLVIZ_CACHE_MAX_GB", "0")
    assert model_cache.cached(src, "gguf-float32", _writer(1, [])) is None
    assert not cache.exists()


def test_the_folder_follows_klviz_cache_dir_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("KLVIZ_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert model_cache.cache_dir() == tmp_path / "klviz"
    monkeypatch.setenv("KLVIZ_CACHE_DIR", str(tmp_path / "mine"))
    assert model_cache.cache_dir() == tmp_path / "mine"
