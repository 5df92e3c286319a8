"""`klviz score`: the token table for given (prompt, response) pairs."""

from __future__ import annotations

import argparse
from pathlib import Path

import klviz
from klviz.engine.columns import BAND_EDGES
from klviz.engine.divergence import ScoreInput, score
from klviz.errors import KlvizError
from klviz.cli.common import log, pair_arguments, quiet_transformers, ray_arguments
from klviz.io import read_jsonl, write_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help='JSONL: {"prompt", "response"} or {"prompt_ids", "response_ids"} per line')
    pair_arguments(p)
    ray_arguments(p)


def _ids(row: dict, key: str, path: Path) -> list[int]:
    ids = row[key]
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise KlvizError(f"{path}, line {row['_line']}: {key!r} must be a list of integer token ids.")
    return ids


def read_score_inputs(path: str | Path, tokenizer, rows: list[dict] | None = None) -> list[ScoreInput]:
    """Lines `{"prompt": str, "response": str}` or `{"prompt_ids": [int], "response_ids": [int]}`.

    Text is tokenized by the pair's tokenizer: the prompt with its special tokens (e.g. BOS), the
    response without, its ids appended to the prompt's. Optional `prompt_id` (default: the line
    number) and `sample_id` (default 0).
    """
    path = Path(path)
    out = []
    for row in rows if rows is not None else read_jsonl(path):
        line = row["_line"]
        if "prompt_ids" in row and "response_ids" in row:
            prompt_ids, response_ids = _ids(row, "prompt_ids", path), _ids(row, "response_ids", path)
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            response_ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        else:
            raise KlvizError(f"{path}, line {line}: expected string fields \"prompt\" and \"response\" "
                             "or integer lists \"prompt_ids\" and \"response_ids\".")
        if not response_ids:
            raise KlvizError(f"{path}, line {line}: the response is empty, so there is no token to score.")
        sample_id = row.get("sample_id", 0)
        if not isinstance(sample_id, int):
            raise KlvizError(f"{path}, line {line}: \"sample_id\" must be an integer.")
        out.append(ScoreInput(prompt_ids, response_ids, str(row.get("prompt_id", line)), sample_id))
    return out


def table_metadata(pair, **extra) -> dict[str, str]:
    """What every token table records about how it was made."""
    return {
        "version": klviz.__version__,
        "policy": str(pair.policy_info.path),
        "sft": str(pair.sft_info.path),
        "dtype": str(pair.dtype).replace("torch.", ""),
        "device": str(pair.device),
        "band_edges": ",".join(repr(e) for e in BAND_EDGES),
        **{k: str(v) for k, v in extra.items()},
    }


def run(args: argparse.Namespace) -> int:
    from klviz.models import load_pair

    if getattr(args, "ray", None) is not None:  # a Namespace built without the flags runs locally
        from klviz.distributed_tables import score_on_ray

        return score_on_ray(args)
    quiet_transformers()
    out = Path(args.out)
    rows = read_jsonl(args.input)  # malformed input fails before any model is loaded
    pair = load_pair(args.policy, args.sft, device=args.device, dtype=args.dtype,
                     policy_base=args.policy_base, log=log)
    inputs = read_score_inputs(args.input, pair.tokenizer, rows)
    df = score(pair.policy, pair.sft, pair.tokenizer, inputs, top_k=args.top_k,
               batch_size=args.batch_size, progress=True)
    write_table(df, out, table_metadata(pair, top_k=args.top_k))
    log(f"wrote {len(df)} token rows from {len(inputs)} responses to {out}")
    return 0

