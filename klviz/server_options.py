"""What the dashboard's owner allowed and asked to open, given when the server starts (never from the page).

    streamlit run app.py -- [--data-root DIR ...] [--allow-code] [--table FILE.parquet ...] [--policy P --sft S]

(`klviz dashboard` passes the same flags.) Everything typed or uploaded in the browser is checked
against these: paths resolve inside the allowed roots only, and code (module:function rewards,
reward-model folders) runs only with --allow-code. No streamlit and no torch here.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerOptions:
    """The dashboard server's start-up options."""

    data_roots: tuple[Path, ...] = ()
    """Folders, besides the working directory, sample_data/ and the uploads folder, whose files the page may open."""
    allow_code: bool = False
    """Let the page run code: module:function rewards and reward-model folders (CLI-only otherwise)."""
    tables: tuple[Path, ...] = ()
    """Token tables (.parquet) to open on start."""
    policy: str | None = None
    """A policy checkpoint to open on start (with `sft`)."""
    sft: str | None = None
    """The SFT checkpoint to open on start (with `policy`)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags shared by `streamlit run app.py -- ...` and `klviz dashboard`."""
    p.add_argument("--data-root", action="append", default=[], metavar="DIR",
                   help="a folder whose files the page may open (repeatable)")
    p.add_argument("--allow-code", action="store_true",
                   help="let the page run module:function rewards and reward-model folders (trusted users only)")
    p.add_argument("--policy", default=None, help="policy checkpoint to open on start")
    p.add_argument("--sft", default=None, help="SFT checkpoint to open on start")


def parse(argv: list[str]) -> ServerOptions:
    """ServerOptions from the script's arguments (those after `--`); an unknown flag is an error."""
    p = argparse.ArgumentParser(prog="streamlit run app.py --")
    add_arguments(p)
    p.add_argument("tables", nargs="*", help="token tables (.parquet) to open")
    args = p.parse_args(argv)
    return ServerOptions(data_roots=tuple(Path(d).expanduser().resolve() for d in args.data_root),
                         allow_code=args.allow_code, tables=tuple(Path(t).expanduser().resolve() for t in args.tables),
                         policy=args.policy, sft=args.sft)


@functools.cache
def current() -> ServerOptions:
    """This server's options, parsed once from sys.argv, where `streamlit run app.py -- ...` leaves the
    script's own arguments. Any other process (AppTest under pytest, say) gets the defaults."""
    return parse(sys.argv[1:]) if Path(sys.argv[0]).name == "app.py" else ServerOptions()
