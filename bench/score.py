"""Benchmark: `klviz score`'s engine against two baselines, in one run, on the same inputs.

  bare   the cost floor: both models' forward passes computing only the sampled tokens' log-probs,
         the way TRL does it (logits_to_keep for the response span, then log_softmax+gather in float32)
  naive  exact KL the obvious way: full [batch, response, vocab] log-softmax tensors for both models,
         then the same columns as klviz from them
  klviz  klviz.engine.divergence.score: decoder to hidden states, head on chunks of response positions

Wide vocabulary (32k) and 8k+ response tokens by default. Each method runs in its own subprocess so
peak memory is its own: peak RSS above the process's RSS once the models are built (sampled every
2 ms). The methods take turns, round after round (bare, naive, klviz, bare, ...), so a slow spell
on a shared machine hits all of them; a method's time is its best over the rounds, its median
beside it. Usage: python bench/score.py [--device cpu|cuda] [--rounds 3] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import psutil
import torch

SHAPE = dict(vocab_size=32000, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=8, intermediate_size=1376, max_position_embeddings=512)


def build(device, dtype, seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**SHAPE)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def make_inputs(n_seq, prompt_len, response_len, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, SHAPE["vocab_size"], (n_seq, prompt_len + response_len), generator=g)
    return ids


@torch.no_grad()
def run_bare(policy, sft, ids, P, batch_size):
    R = ids.shape[1] - P
    out = []
    for s in range(0, ids.shape[0], batch_size):
        x = ids[s:s + batch_size].to(policy.device)
        y = x[:, P:]  # (B, R) response tokens
        for m in (policy, sft):
            logits = m(input_ids=x, logits_to_keep=R + 1).logits[:, :-1].float()  # (B, R, V): t predicts t+1
            logp = logits.gather(-1, y[..., None])[..., 0] - logits.logsumexp(-1)
            out.append(logp.cpu())
    return out


@torch.no_grad()
def run_naive(policy, sft, ids, P, batch_size):
    from klviz.engine.divergence import token_stats

    out = []
    for s in range(0, ids.shape[0], batch_size):
        x = ids[s:s + batch_size].to(policy.device)
        y = x[:, P:].reshape(-1)
        logp = torch.log_softmax(policy(input_ids=x).logits.float(), -1)[:, P - 1:-1]  # (B, R, V)
        logq = torch.log_softmax(sft(input_ids=x).logits.float(), -1)[:, P - 1:-1]
        V = logp.shape[-1]
        stats = token_stats(logp.reshape(-1, V), logq.reshape(-1, V), y, top_k=10)
        out.append({k: v.cpu() for k, v in stats.items()})
    return out


def run_klviz(policy, sft, ids, P, batch_size):
    from klviz.engine.divergence import ScoreInput, score_tensors

    inputs = [ScoreInput(row[:P].tolist(), row[P:].tolist()) for row in ids]
    return score_tensors(policy, sft, inputs, top_k=10, batch_size=batch_size)


METHODS = {"bare": run_bare, "naive": run_naive, "klviz": run_klviz}


class PeakRSS:
    """Peak resident memory above a baseline, sampled in a thread (torch CPU allocations included)."""

    def __init__(self, interval=0.002):
        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def child(args):
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    policy, sft = build(device, dtype, 1), build(device, dtype, 2)
    ids = make_inputs(args.n_seq, args.prompt_len, args.response_len)
    fn = METHODS[args.child]
    fn(policy, sft, ids[:args.batch_size], args.prompt_len, args.batch_size)  # warm-up
    times, peaks = [], []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            fn(policy, sft, ids, args.prompt_len, args.batch_size)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        peaks.append((torch.cuda.max_memory_allocated() - base) if device.type == "cuda" else mem.peak - mem.base)
    print(json.dumps({"method": args.child, "seconds": min(times), "peak_bytes": max(peaks)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-seq", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--response-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per process")
    ap.add_argument("--rounds", type=int, default=3, help="processes per method, taking turns")
    ap.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    runs = {method: [] for method in METHODS}
    for r in range(args.rounds):
        for method in METHODS:
            cmd = [sys.executable, __file__, "--child", method] + [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("child", "rounds")]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ})
            runs[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {method:6s} {runs[method][-1]['seconds']:8.2f} s  "
                  f"peak {runs[method][-1]['peak_bytes'] / 2**20:8.1f} MiB", flush=True)
    results = {m: {"seconds": min(x["seconds"] for x in rs), "median": statistics.median(x["seconds"] for x in rs),
                   "peak_bytes": max(x["peak_bytes"] for x in rs),
                   "median_peak": statistics.median(x["peak_bytes"] for x in rs)} for m, rs in runs.items()}
    print()
    for m, x in results.items():
        print(f"{m:6s} best {x['seconds']:8.2f} s  median {x['median']:8.2f} s  "
              f"peak {x['peak_bytes'] / 2**20:8.1f} MiB (highest), {x['median_peak'] / 2**20:8.1f} MiB (median)")
    n_tok = args.n_seq * args.response_len
    bare, kl = results["bare"], results["klviz"]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {args.device}, "
          f"torch {torch.__version__}; Llama {SHAPE['hidden_size']}x{SHAPE['num_hidden_layers']}, vocab "
          f"{SHAPE['vocab_size']}; {args.n_seq} seqs x ({args.prompt_len} prompt + {args.response_len} response) = "
          f"{n_tok} response tokens, batch {args.batch_size}")
    print(f"klviz / bare: time {kl['seconds'] / bare['seconds']:.3f}x best, {kl['median'] / bare['median']:.3f}x median "
          f"(goal <= 1.10x), peak memory {kl['peak_bytes'] / max(bare['peak_bytes'], 1):.3f}x highest, "
          f"{kl['median_peak'] / max(bare['median_peak'], 1):.3f}x median (goal <= 0.5x)")
    print(f"naive / bare: time {results['naive']['seconds'] / bare['seconds']:.3f}x, "
          f"peak memory {results['naive']['peak_bytes'] / max(bare['peak_bytes'], 1):.3f}x")


if __name__ == "__main__":
    main()
