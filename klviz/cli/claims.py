"""`klviz claims [--json]`: every verdict computed now by klviz.lab.claims."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list of {id, statement, holds, evidence}")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from klviz.lab.claims import claims_to_json, evaluate_claims, format_claims

    claims = evaluate_claims(seed=args.seed)
    print(claims_to_json(claims) if args.json else format_claims(claims))
    return 0
