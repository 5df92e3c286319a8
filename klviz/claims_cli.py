"""`klviz claims [--json]`: every verdict computed now by klviz.claims."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from klviz.claims import claims_to_json, evaluate_claims, format_claims

    claims = evaluate_claims(seed=args.seed)
    print(claims_to_json(claims) if args.json else format_claims(claims))
    return 0
