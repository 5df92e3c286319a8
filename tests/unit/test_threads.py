"""Every klviz entry point applies the same thread settings before torch loads (klviz.threads)."""

import os
import subprocess
import sys
from pathlib import Path

from klviz.threads import THREAD_ENV, apply_thread_settings

ROOT = Path(__file__).resolve().parents[2]


def _env_without_thread_settings() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_defaults_are_set_and_a_users_own_value_is_kept():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_thread_settings(env) == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_thread_settings({}) == THREAD_ENV


def test_the_cli_sets_them_before_torch_is_imported():
    """klviz.cli is what both `klviz` (klviz.cli:main) and `python -m klviz` import first; torch comes
    later, with a command's arguments (the full parser: `klviz ppo`'s defaults import it)."""
    entry = "import klviz.cli\nklviz.cli.build_parser()\nassert 'torch' in sys.modules"
    # A meta-path hook records the environment at the moment torch is first imported.
    probe = ("import os, sys\nseen = {}\nclass Hook:\n    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'torch' and 'at_torch' not in seen:\n"
             "            seen['at_torch'] = os.environ.get('OMP_WAIT_POLICY')\n        return None\n"
             "sys.meta_path.insert(0, Hook())\n" + entry + "\nprint(seen.get('at_torch'))\n")
    out = subprocess.run([sys.executable, "-c", probe], env=_env_without_thread_settings(), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == THREAD_ENV["OMP_WAIT_POLICY"]


def test_the_settings_module_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, klviz.threads; print('torch' in sys.modules)"],
                         env=_env_without_thread_settings(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_app_applies_them_first():
    source = (ROOT / "app.py").read_text(encoding="utf-8")
    assert source.index("apply_thread_settings()") < source.index("import streamlit")
