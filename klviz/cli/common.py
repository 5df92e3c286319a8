"""What several commands share: the pair's arguments, quiet transformers logging, a log line on stderr."""

from __future__ import annotations

import argparse
import sys


def log(message: str) -> None:
    print(message, file=sys.stderr)


def quiet_transformers() -> None:
    """klviz reports each load in one line of its own; transformers' progress bars and advice are noise."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def pair_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy checkpoint: HF folder, .zip of one, LoRA adapter folder or .gguf")
    p.add_argument("--sft", required=True, help="SFT (reference) checkpoint, same forms")
    p.add_argument("--policy-base", default=None, help="base model for a LoRA policy adapter (default: the SFT checkpoint)")
    p.add_argument("--out", required=True, help="output .parquet (written atomically)")
    p.add_argument("--top-k", type=int, default=10, help="vocabulary entries kept per position for gained/lost mass")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    p.add_argument("--dtype", default="auto", help="weights' dtype: auto (bf16 on CUDA, else float32), float32, bfloat16")


def ray_arguments(p: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS] and --actors N: run the command's engine in a Ray Data actor pool (klviz/distributed.py)."""
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray (optional extra: pip install 'klviz[ray]'): no ADDRESS starts a local "
                        "cluster, 'auto' joins a running one, or give its address (host:port, ray://host:port)")
    p.add_argument("--actors", type=int, default=None,
                   help="with --ray: actors holding both models (default: one per GPU, else one)")
