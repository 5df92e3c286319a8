"""`klviz score`: the token table for given (prompt, response) pairs, from klviz's JSONL or a trainer's
logged rollouts (TRL, verl, RL Logging Board: klviz/rollouts.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from klviz.cli.common import log, pair_arguments, quiet_transformers, ray_arguments
from klviz.errors import KlvizError
from klviz.io import write_table
from klviz.rollouts import read_rollouts, score_inputs
from klviz.tokentable import table_metadata, vocab_metadata

INPUT_HELP = ("responses: klviz JSONL ({prompt, response} or {prompt_ids, response_ids}), TRL completions "
              "(.parquet/.jsonl with prompt, completion), verl rollout_data_dir dumps (input, output), "
              "RL Logging Board JSONL, or a folder of such files")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help=INPUT_HELP)
    pair_arguments(p)
    ray_arguments(p)


def check_out(out: Path) -> None:
    """Fail before loading any model when the output cannot be written."""
    if not out.parent.is_dir():
        raise KlvizError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    if out.is_dir():
        raise KlvizError(f"Cannot write {out}: it is a folder.")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "ray", None) is not None:  # a Namespace built without the flags runs locally
        from klviz.distributed_tables import score_on_ray

        return score_on_ray(args)  # its driver never imports torch: the actors tokenize (klviz.distributed)
    from klviz.engine.divergence import score
    from klviz.models import load_pair

    quiet_transformers()
    out = Path(args.out)
    check_out(out)
    fmt, rollouts = read_rollouts(args.input)  # malformed input fails before any model is loaded
    pair = load_pair(args.policy, args.sft, device=args.device, dtype=args.dtype,
                     policy_base=args.policy_base, log=log)
    inputs = score_inputs(rollouts, pair.tokenizer)
    df = score(pair.policy, pair.sft, pair.tokenizer, inputs, top_k=args.top_k,
               batch_size=args.batch_size, progress=True)
    meta = table_metadata(pair, command="score", input=args.input, input_format=fmt, top_k=args.top_k)
    write_table(df, out, {**meta, **vocab_metadata(df, pair.tokenizer)})
    log(f"wrote {len(df)} token rows from {len(inputs)} {fmt} responses to {out}")
    return 0
