"""The klviz command line: score | analyze | ppo | claims | make-sample-data.

Each command's body lives beside the library code it drives; this module only builds the parser
and turns a KlvizError into one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from klviz.errors import KlvizError

EXIT_USAGE = 2


def _pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy checkpoint: HF folder, .zip of one, LoRA adapter folder or .gguf")
    p.add_argument("--sft", required=True, help="SFT (reference) checkpoint, same forms")
    p.add_argument("--policy-base", default=None, help="base model for a LoRA policy adapter (default: the SFT checkpoint)")
    p.add_argument("--out", required=True, help="output .parquet (written atomically)")
    p.add_argument("--top-k", type=int, default=10, help="vocabulary entries kept per position for gained/lost mass")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    p.add_argument("--dtype", default="auto", help="weights' dtype: auto (bf16 on CUDA, else float32), float32, bfloat16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="klviz", description="How far, and where, has a policy drifted from its SFT model?")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="token table for given (prompt, response) pairs")
    p.add_argument("--input", required=True, help='JSONL: {"prompt", "response"} or {"prompt_ids", "response_ids"} per line')
    _pair_args(p)
    p.set_defaults(handler="klviz.score_cli")

    p = sub.add_parser("analyze", help="sample responses, then score them")
    p.add_argument("--prompts", required=True, help="JSONL with prompt or messages (optional id), or .txt, one prompt per line")
    _pair_args(p)
    p.add_argument("--samples-per-prompt", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-from", choices=["policy", "sft", "both"], default="policy")
    p.set_defaults(handler="klviz.analyze_cli")

    p = sub.add_parser("ppo", help="train a policy from the SFT model with the mini PPO")
    p.add_argument("--sft", required=True, help="SFT checkpoint (the frozen reference)")
    p.add_argument("--policy-init", default=None, help="start the policy from this checkpoint instead of the SFT model")
    p.add_argument("--reward", required=True, help="sentiment | length | keyword:WORD | module:function | reward-model folder")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--kl-placement", default="reward", help="reward (InstructGPT), loss (GRPO) or none")
    p.add_argument("--kl-estimator", default="k1", help="k1 | k2 | k3 | exact-reverse | exact-forward")
    p.add_argument("--kl-coef", type=float, default=0.05, help="beta")
    p.add_argument("--target-kl", type=float, default=None, help="with --kl-horizon: adaptive beta (Ziegler et al. 2019)")
    p.add_argument("--kl-horizon", type=int, default=10000)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: PPOConfig's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--prompts", default=None, help="prompts file (default: the shipped sample prompts)")
    p.add_argument("--out", required=True, help="folder for metrics.jsonl and policy/")
    p.set_defaults(handler="klviz.ppo_cli")

    p = sub.add_parser("claims", help="verdicts, computed now, on statements about KL direction and estimators")
    p.add_argument("--json", action="store_true", help="print a JSON list of {id, statement, holds, evidence}")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler="klviz.claims_cli")

    p = sub.add_parser("make-sample-data", help="regenerate the shipped sample models and prompts")
    p.add_argument("--out", default="sample_data")
    p.add_argument("--quick", action="store_true", help="a tiny version in about a minute (for tests)")
    p.set_defaults(handler="klviz.sample_cli")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # klviz reports each load in one line of its own
    hf_logging.set_verbosity_error()  # and its own warnings; transformers' advice is noise here
    try:
        return importlib.import_module(args.handler).run(args)
    except KlvizError as e:
        print(f"klviz: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("klviz: interrupted; nothing was written.", file=sys.stderr)
        return 130
    except MemoryError:
        print("klviz: error: out of memory: try a smaller --batch-size or --device cpu.", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug: one line for the user, the traceback with KLVIZ_DEBUG=1
        if os.environ.get("KLVIZ_DEBUG"):
            raise
        print(f"klviz: internal error: {type(e).__name__}: {e} (rerun with KLVIZ_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
