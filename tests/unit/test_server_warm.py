"""klviz.app.server: `klviz dashboard`'s streamlit command line imports the first page's modules while the
server starts, and none of them is torch (a token table opens without it)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_warm_imports_the_first_pages_modules_without_torch():
    code = ("import sys; from klviz.app import server; server.warm(); "
            "print(all(m in sys.modules for m in server.WARM_MODULES), 'torch' in sys.modules, "
            "'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False", "False"]


def test_it_is_streamlits_own_command_line():
    done = subprocess.run([sys.executable, "-m", "klviz.app.server", "--version"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.startswith("Streamlit, version"), (done.stdout, done.stderr[-2000:])
