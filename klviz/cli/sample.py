"""`klviz make-sample-data [--out DIR] [--quick]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="sample_data")
    p.add_argument("--quick", action="store_true", help="a tiny version in about a minute (for tests)")


def run(args: argparse.Namespace) -> int:
    from klviz.cli.common import quiet_transformers
    from klviz.sample.make import make_sample_data

    quiet_transformers()
    make_sample_data(Path(args.out), quick=args.quick, progress=True)
    return 0
