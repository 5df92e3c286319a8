"""`klviz dashboard [TABLE.parquet ...] [--policy P --sft S] [--data-root DIR ...] [--port N]`: start the
dashboard the way `tensorboard --logdir` does, on loopback, opening on what it was given.

It runs `streamlit run app.py -- <flags>` (through klviz.app.serve, which starts a warm-up thread with the
server): the flags after `--` are klviz.server_options', the one parser `streamlit run app.py -- ...` also
reads, so plain `streamlit run app.py` keeps working.
The repository's .streamlit/config.toml is passed as flags, so it applies from any working directory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

from klviz import server_options
from klviz.errors import KlvizError

APP_ROOT = Path(__file__).resolve().parents[2]
"""Where app.py, pages/ and .streamlit/ live (the checkout klviz is installed from)."""
DEFAULT_PORT = 8501  # streamlit's own default


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tables", nargs="*", metavar="TABLE.parquet", help="token tables to open (score, analyze, trajectory)")
    server_options.add_arguments(p)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to serve on")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default loopback; another address exposes the dashboard)")


def _config_flags(root: Path) -> list[str]:
    """.streamlit/config.toml's settings as `--section.key=value` flags."""
    path = root / ".streamlit" / "config.toml"
    if not path.is_file():
        return []
    flags = []
    for section, values in tomllib.loads(path.read_text(encoding="utf-8")).items():
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags.append(f"--{section}.{key}={text}")
    return flags


def _check_tables(tables: list[str]) -> list[str]:
    out = []
    for t in tables:
        p = Path(t).expanduser()
        if not p.is_file():
            raise KlvizError(f"{t}: no such token table." if not p.exists() else f"{t} is not a file.")
        if p.suffix.lower() != ".parquet":
            raise KlvizError(f"{t} is not a .parquet token table (klviz score, analyze or trajectory write one).")
        out.append(str(p.resolve()))
    return out


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The `streamlit run` command line for these arguments (checked: tables exist, pair complete)."""
    app = APP_ROOT / "app.py"
    if not app.is_file():
        raise KlvizError(f"The dashboard's app.py is not beside the klviz package ({APP_ROOT}): "
                         "install klviz from its repository (pip install -e .).")
    if (args.policy is None) != (args.sft is None):
        raise KlvizError("Give both --policy and --sft to open a pair, or neither.")
    if not 0 < args.port < 65536:
        raise KlvizError(f"--port must be between 1 and 65535, got {args.port}.")
    script = _check_tables(args.tables)
    for root in args.data_root:
        script += ["--data-root", str(Path(root).expanduser().resolve())]
    if args.allow_code:
        script.append("--allow-code")
    for flag in ("policy", "sft"):
        if getattr(args, flag) is not None:
            script += [f"--{flag}", getattr(args, flag)]
    return [sys.executable, "-m", "klviz.app.serve", str(app), *_config_flags(APP_ROOT),
            f"--server.address={args.host}", f"--server.port={args.port}", "--", *script]


def run(args: argparse.Namespace) -> int:
    cmd = streamlit_command(args)
    print(f"klviz dashboard: http://{args.host}:{args.port}  (Ctrl+C to stop)", file=sys.stderr)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
