"""`klviz make-sample-data [--out DIR] [--quick]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from klviz.sample.make import make_sample_data

    make_sample_data(Path(args.out), quick=args.quick, progress=True)
    return 0
