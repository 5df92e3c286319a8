"""`klviz trajectory`: the same responses scored under every checkpoint of a run, SFT side computed once.

    klviz trajectory --sft SFT --checkpoints runs/ppo [--input rollouts.jsonl | --prompts p.jsonl] --out t.parquet

--checkpoints takes a folder of checkpoint-<step> folders, checkpoint folders, globs or comma lists.
With --prompts, responses are sampled once from the SFT model (SamplingConfig's settings) and every
checkpoint scores those same responses.
"""

from __future__ import annotations

import argparse
import json
import types
from dataclasses import asdict
from pathlib import Path

from klviz.cli.common import log, quiet_transformers, ray_arguments
from klviz.cli.score import INPUT_HELP, check_out
from klviz.errors import KlvizError
from klviz.io import write_table
from klviz.settings import SamplingConfig
from klviz.trajectory import find_checkpoints

ALL_EMPTY = "Every response sampled from the SFT model was empty, so there is nothing to score."


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SamplingConfig()
    p.add_argument("--sft", required=True, help="SFT (reference) checkpoint: HF folder, .zip or .gguf")
    p.add_argument("--checkpoints", required=True, nargs="+", metavar="DIR|GLOB|LIST",
                   help="a folder of checkpoint-<step> folders (as the transformers Trainer and TRL save them), "
                        "checkpoint folders, globs or comma-separated lists; LoRA adapters included")
    p.add_argument("--base", default=None, help="base model of LoRA adapter checkpoints (default: the SFT checkpoint)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", help=INPUT_HELP)
    what.add_argument("--prompts", help="JSONL (prompt or messages) or .txt: responses sampled once from the SFT model")
    p.add_argument("--out", required=True, help="output .parquet (written atomically)")
    p.add_argument("--top-k", type=int, default=10, help="vocabulary entries kept per position for gained/lost mass")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    p.add_argument("--dtype", default="auto", help="weights' dtype: auto (bf16 on CUDA, else float32), float32, bfloat16")
    p.add_argument("--samples-per-prompt", type=int, default=d.samples_per_prompt)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--seed", type=int, default=d.seed)
    ray_arguments(p)


def sampling_config(args) -> SamplingConfig:
    """--prompts' settings: responses sampled from the SFT model, batch_size at a time."""
    return SamplingConfig(samples_per_prompt=args.samples_per_prompt, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=args.top_p, seed=args.seed, sample_from="sft",
                          batch_size=args.batch_size)


def series_metadata(args, checkpoints: list, sft_info) -> dict[str, str]:
    """What a series' table records (with the input's or the sampling's keys added by the caller)."""
    return {"command": "trajectory", "sft": str(args.sft), "top_k": str(args.top_k),
            "checkpoints": json.dumps({c.name: str(c.path) for c in checkpoints}),
            "dtype": str(sft_info.dtype).removeprefix("torch."), "device": sft_info.device}


def responses_metadata(args, fmt: str | None = None, cfg: SamplingConfig | None = None) -> dict[str, str]:
    """Where the responses came from: the --input file and its format, or the --prompts and the sampling."""
    if args.input:
        return {"input": args.input, "input_format": fmt}
    return {"prompts": args.prompts, "sampling": json.dumps(asdict(cfg))}


def finish_metadata(meta: dict, checkpoints: list) -> dict[str, str]:
    import klviz

    return {**meta, "version": klviz.__version__,
            "policy": f"{len(checkpoints)} checkpoints: {checkpoints[0].name} .. {checkpoints[-1].name}"}


def check_args(args) -> list:
    """The series' checkpoints, after every check that needs no model (output, --top-k, the input file)."""
    check_out(Path(args.out))
    if args.top_k < 1:
        raise KlvizError(f"--top-k must be at least 1, got {args.top_k}.")
    checkpoints = find_checkpoints(args.checkpoints)  # before any slow load
    if args.input:
        from klviz.rollouts import read_rollouts

        read_rollouts(args.input)  # a malformed file fails before the models load
    return checkpoints


def _responses(args, sft, log_meta: dict) -> list:
    """ScoreInputs from --input, or sampled once from the SFT model for --prompts."""
    if args.input:
        from klviz.rollouts import read_rollouts, score_inputs

        fmt, rollouts = read_rollouts(args.input)
        log_meta.update(responses_metadata(args, fmt=fmt))
        return score_inputs(rollouts, sft.tokenizer)
    from klviz.prompts import read_prompts
    from klviz.sampling import sample

    cfg = sampling_config(args)
    log_meta.update(responses_metadata(args, cfg=cfg))
    # sample() reads pair.policy only for its context length: the SFT model stands in for it.
    sft_only = types.SimpleNamespace(policy=sft.model, sft=sft.model, tokenizer=sft.tokenizer)
    inputs = [x for x in sample(sft_only, read_prompts(args.prompts), cfg) if x.response_ids]
    if not inputs:
        raise KlvizError(ALL_EMPTY)
    return inputs


def run(args: argparse.Namespace) -> int:
    if getattr(args, "ray", None) is not None:  # a Namespace built without the flags runs locally
        from klviz.distributed_tables import trajectory_on_ray

        return trajectory_on_ray(args)  # the driver imports torch on a thread while Ray starts
    from klviz.models import load_model
    from klviz.tokentable import vocab_metadata
    from klviz.trajectory import trajectory_table

    checkpoints = check_args(args)
    out = Path(args.out)
    quiet_transformers()
    sft = load_model(args.sft, device=args.device, dtype=args.dtype, role="sft", log=log)
    meta = series_metadata(args, checkpoints, sft.info)
    inputs = _responses(args, sft, meta)
    base = args.base or args.sft

    def load(ck):
        return load_model(str(ck.path), device=args.device, dtype=args.dtype, base=base, role=ck.name, log=log)

    df = trajectory_table(sft.model, sft.tokenizer, checkpoints, inputs, load, top_k=args.top_k,
                          batch_size=args.batch_size, progress=True, log=log)
    meta = finish_metadata(meta, checkpoints)
    write_table(df, out, {**meta, **vocab_metadata(df, sft.tokenizer)})
    log(f"wrote {len(df)} token rows ({len(inputs)} responses x {len(checkpoints)} checkpoints) to {out}")
    return 0
