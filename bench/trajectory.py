"""Benchmark: `klviz trajectory` over K checkpoints against K separate `klviz score` runs, in one run.

Both sides are what a user types, run as subprocesses (`python -m klviz ...`), so each pays its own
process start, imports and model loads: `trajectory` loads the SFT model and runs its decoder once;
K `score` runs load and run it K times. Same responses (token ids, klviz JSONL), same batch size,
same top-k. The two take turns round after round so a slow spell on a shared machine hits both; each
side's time is its best over the rounds, the median beside it. Goal (issue 14): ratio <= 0.7 at K = 4.

    python bench/trajectory.py [--k 4] [--rounds 2] [--n-seq 32] [--prompt-len 32] [--response-len 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(vocab_size=32000, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=8, intermediate_size=1376, max_position_embeddings=512)


def build_run(root: Path, k: int) -> tuple[Path, Path]:
    """root/sft and root/out/checkpoint-<step> x k: a random Llama and k perturbed copies of it, each with
    the tests' tiny tokenizer (the inputs are token ids; a folder needs a tokenizer to load)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT))
    from tests.helpers.tiny import make_tokenizer

    tok = make_tokenizer()
    torch.manual_seed(0)
    sft = LlamaForCausalLM(LlamaConfig(**SHAPE)).eval()
    sft.save_pretrained(root / "sft")
    tok.save_pretrained(root / "sft")
    for i in range(k):
        g = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for p in sft.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.002)  # drift a little more each checkpoint
        sft.save_pretrained(root / "out" / f"checkpoint-{(i + 1) * 100}")
        tok.save_pretrained(root / "out" / f"checkpoint-{(i + 1) * 100}")
    return root / "sft", root / "out"


def write_inputs(path: Path, n_seq: int, prompt_len: int, response_len: int) -> Path:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, SHAPE["vocab_size"], (n_seq, prompt_len + response_len), generator=g).tolist()
    path.write_text("".join(json.dumps({"prompt_ids": r[:prompt_len], "response_ids": r[prompt_len:]}) + "\n"
                            for r in ids))
    return path


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd[2:4])} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n-seq", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--response-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    py = [sys.executable, "-m", "klviz"]
    common = ["--device", "cpu", "--batch-size", str(args.batch_size), "--top-k", "10"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sft, out = build_run(tmp, args.k)
        inp = write_inputs(tmp / "in.jsonl", args.n_seq, args.prompt_len, args.response_len)
        ckpts = sorted(out.iterdir(), key=lambda p: int(p.name.split("-")[1]))
        traj_cmd = py + ["trajectory", "--sft", str(sft), "--checkpoints", str(out), "--input", str(inp),
                         "--out", str(tmp / "t.parquet"), *common]
        score_cmds = [py + ["score", "--policy", str(c), "--sft", str(sft), "--input", str(inp),
                            "--out", str(tmp / f"{c.name}.parquet"), *common] for c in ckpts]
        times = {"trajectory": [], "separate": []}
        for _ in range(args.rounds):
            times["trajectory"].append(timed(traj_cmd))
            times["separate"].append(sum(timed(c) for c in score_cmds))
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({
        "k": args.k, "n_seq": args.n_seq, "prompt_len": args.prompt_len, "response_len": args.response_len,
        "response_tokens": args.n_seq * args.response_len, "shape": SHAPE, "rounds": args.rounds,
        "trajectory_s": {"best": round(best["trajectory"], 2), "median": round(statistics.median(times["trajectory"]), 2)},
        "separate_s": {"best": round(best["separate"], 2), "median": round(statistics.median(times["separate"]), 2)},
        "ratio_best": round(best["trajectory"] / best["separate"], 3),
        "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
    }, indent=1))


if __name__ == "__main__":
    main()
