"""`klviz dashboard`: the streamlit command it builds, what app.py then parses, bad input, and a real start."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from klviz import server_options
from klviz.cli import build_parser, main
from klviz.cli.dashboard import streamlit_command

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "sample_data" / "dashboard_table.parquet"


def _args(*argv):
    return build_parser().parse_args(["dashboard", *argv])


def test_command_passes_server_options_that_app_py_parses(tmp_path):
    cmd = streamlit_command(_args(str(TABLE), "--data-root", str(tmp_path), "--policy", "p", "--sft", "s",
                                  "--port", "8765"))
    assert cmd[1:3] == ["-m", "klviz.app.serve"] and cmd[3] == str(ROOT / "app.py")  # streamlit run + warm-up
    assert "--server.address=127.0.0.1" in cmd and "--server.port=8765" in cmd
    assert "--server.headless=true" in cmd  # .streamlit/config.toml, whatever the working directory
    opts = server_options.parse(cmd[cmd.index("--") + 1:])
    assert opts.tables == (TABLE.resolve(),) and opts.data_roots == (tmp_path.resolve(),)
    assert (opts.policy, opts.sft, opts.allow_code) == ("p", "s", False)


@pytest.mark.parametrize("argv,needle", [
    (["nope.parquet"], "nope.parquet: no such token table."),
    ([str(ROOT / "README.md")], "is not a .parquet token table"),
    (["--policy", "p"], "Give both --policy and --sft"),
])
def test_bad_arguments_exit_2(argv, needle, capsys):
    assert main(["dashboard", *argv]) == 2
    assert needle in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_on_loopback(tmp_path):
    port = _free_port()
    log = (tmp_path / "log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "klviz", "dashboard", str(TABLE), "--port", str(port)],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "log").read_text()[-2000:]
            assert time.monotonic() < deadline, (tmp_path / "log").read_text()[-2000:]
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
