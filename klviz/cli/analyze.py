"""`klviz analyze`: load a pair, sample responses, score them, write the token table.

The argparse wiring lives in klviz/cli/__init__.py; this is the command's body. Inputs are checked before
the (slow) model loading; the parquet is written atomically at the very end, so a failure at any
point leaves no output file. Metadata records both model paths and every sampling setting.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from klviz import __version__
from klviz.engine.columns import BAND_EDGES
from klviz.cli.common import log, pair_arguments, quiet_transformers, ray_arguments
from klviz.errors import KlvizError
from klviz.io import write_table
from klviz.prompts import read_prompts
from klviz.settings import SamplingConfig
from klviz.tokentable import vocab_metadata


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SamplingConfig()
    p.add_argument("--prompts", required=True, help="JSONL with prompt or messages (optional id), or .txt, one prompt per line")
    pair_arguments(p)
    p.add_argument("--samples-per-prompt", type=int, default=d.samples_per_prompt)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--sample-from", choices=["policy", "sft", "both"], default=d.sample_from)
    ray_arguments(p)


def sampling_config(args) -> SamplingConfig:
    """The SamplingConfig of the flags (and --top-k checked); KlvizError for a bad value."""
    cfg = SamplingConfig(samples_per_prompt=args.samples_per_prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                         sample_from=args.sample_from, batch_size=args.batch_size)
    if args.top_k < 1:
        raise KlvizError(f"--top-k must be at least 1, got {args.top_k}.")
    return cfg


def analyze_metadata(args, cfg: SamplingConfig, pair) -> dict[str, str]:
    """Both model paths, every sampling setting, and where the pair ran (pair: its dtype and device)."""
    return {
        "version": __version__,
        "command": "analyze",
        "policy": str(args.policy),
        "sft": str(args.sft),
        "policy_base": str(args.policy_base or ""),
        "prompts": str(args.prompts),
        "dtype": str(pair.dtype).removeprefix("torch."),
        "device": str(pair.device),
        "top_k": str(args.top_k),
        "band_edges": json.dumps(list(BAND_EDGES)),
        "sampling": json.dumps(asdict(cfg)),
        **{f"sampling.{k}": str(v) for k, v in asdict(cfg).items()},
    }


def run(args) -> int:
    """Run `klviz analyze` from an argparse Namespace; KlvizError for any bad input."""
    if getattr(args, "ray", None) is not None:  # a Namespace built without the flags runs locally
        from klviz.distributed_tables import analyze_on_ray

        return analyze_on_ray(args)
    from klviz.models import load_pair  # torch and transformers: only for this command (see klviz.cli)
    from klviz.sampling import analyze

    prompts = read_prompts(args.prompts)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise KlvizError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    if out.is_dir():
        raise KlvizError(f"Cannot write {out}: it is a folder.")
    cfg = sampling_config(args)
    quiet_transformers()
    pair = load_pair(args.policy, args.sft, device=args.device, dtype=args.dtype,
                     policy_base=args.policy_base, log=log)
    df = analyze(pair, prompts, cfg, top_k=args.top_k, progress=True)
    write_table(df, out, {**analyze_metadata(args, cfg, pair), **vocab_metadata(df, pair.tokenizer)})
    n_responses = df.groupby(["source", "prompt_id", "sample_id"]).ngroups if len(df) else 0
    log(f"wrote {len(df)} token rows from {n_responses} responses to {out}")
    return 0
