"""klviz.app.serve, `klviz dashboard`'s server process: its warm-up thread reads each given table's light
part into the cache the session's run reads (read once in all), waits for the server, and never raises."""

import threading
from pathlib import Path

import pytest

import klviz.tokentable
from klviz import server_options
from klviz.app import opened, serve

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "sample_data" / "dashboard_table.parquet"


@pytest.fixture
def reads(monkeypatch):
    """Every read_light_table call, by path; the opened tables' cache emptied before and after."""
    calls, real = [], klviz.tokentable.read_light_table
    monkeypatch.setattr(klviz.tokentable, "read_light_table", lambda path, shown: calls.append(path) or real(path, shown))
    opened._light.clear()
    yield calls
    opened._light.clear()


def test_warm_up_reads_the_given_table_once_for_the_session(reads, monkeypatch):
    monkeypatch.setattr(serve, "_server_started", lambda: True)
    serve.warm(["--data-root", str(ROOT), str(TABLE)])
    assert reads == [str(TABLE)]
    source = opened.given_tables(server_options.parse([str(TABLE)]))[f"{opened.TABLE_PREFIX}{TABLE.name}"]
    light = opened.light(source)  # the session's run: a cache hit
    assert reads == [str(TABLE)] and light.frame.equals(klviz.tokentable.read_light_table(str(TABLE), TABLE.name).frame)


def test_warm_up_waits_for_the_server_and_gives_up(reads, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(serve, "_server_started", started.is_set)
    thread = threading.Thread(target=serve.warm, args=([str(TABLE)],))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and reads == []  # nothing read before the server answers
    started.set()
    thread.join(60)
    assert reads == [str(TABLE)]
    monkeypatch.setattr(serve, "_server_started", lambda: False)
    monkeypatch.setattr(serve, "SERVER_WAIT_S", 0.1)
    serve.warm([str(TABLE)])  # a server that never starts: it returns, reading nothing
    assert reads == [str(TABLE)]


def test_warm_up_never_raises(reads, monkeypatch, tmp_path):
    monkeypatch.setattr(serve, "_server_started", lambda: True)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    serve.warm([str(bad)])  # the session's run reads it again and shows the sentence
    serve.warm(["--no-such-flag"])
    assert reads == [str(bad)]


def test_main_runs_streamlit_run_with_its_arguments(monkeypatch):
    from streamlit.web import cli

    seen = {}
    monkeypatch.setattr(serve, "warm", lambda args: seen.setdefault("warm", args))
    monkeypatch.setattr(cli, "main", lambda: seen.setdefault("argv", list(serve.sys.argv)) and 0)
    monkeypatch.setattr(serve.sys, "argv", ["serve.py", "app.py", "--server.port=1", "--", "t.parquet"])
    with pytest.raises(SystemExit) as e:
        serve.main()
    assert e.value.code == 0
    assert seen["argv"] == ["streamlit", "run", "app.py", "--server.port=1", "--", "t.parquet"]
    for thread in threading.enumerate():
        if thread.name == serve.WARM_UP:
            thread.join(5)
    assert seen["warm"] == ["t.parquet"]
