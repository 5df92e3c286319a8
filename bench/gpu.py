"""The prepared GPU check (issue 16): the CUDA tests, then klviz's engine against the bare forward and
the naive exact KL on a random Qwen2-shaped model of about 0.5B parameters, in one short run.

Model: transformers.Qwen2Config with Qwen2.5-0.5B's shape (huggingface.co/Qwen/Qwen2.5-0.5B,
config.json: hidden_size 896, num_hidden_layers 24, num_attention_heads 14, num_key_value_heads 2,
intermediate_size 4864, vocab_size 151936, tie_word_embeddings true), random weights (nothing is
downloaded), two seeds for policy and SFT. Weights bf16 on CUDA, every divergence in float32
(klviz.device.resolve_dtype: the engine upcasts each logit chunk; bench/score.py's bare and naive
baselines take `.float()` of the logits). Goal: klviz <= 1.15x bare.

Workload (sized for ~5 minutes of device time in all, most of it start-up and the tests): 32
sequences x (64 prompt + 128 response) tokens = 4,096 response tokens per method per round, batch 8;
3 rounds, the methods taking turns (bare, naive, klviz, bare, ...) as bench/score.py does; time =
best and median over the rounds, memory = peak CUDA allocation above the models. All three methods
run in this one process on the same two models (building 0.5B twice per method would cost more
device time than the measurement); the functions timed are bench/score.py's own.

  python bench/gpu.py                          # on the GPU machine: tests + benchmark, table to $OUT
  python bench/gpu.py --device cpu --tiny      # the same code on CPU at a tiny size, in seconds
  python bench/gpu.py --dry-run                # = --device cpu --tiny
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from score import METHODS, PeakRSS, make_inputs  # noqa: E402  (bench/score.py: the timed functions, one definition)

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True,
                  max_position_embeddings=32768)
TINY = dict(QWEN25_05B, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128)  # the full 151,936 vocabulary: the head's sweep is what is tested
WORKLOAD = dict(n_seq=32, prompt_len=64, response_len=128, batch_size=8, rounds=3)
TINY_WORKLOAD = dict(n_seq=4, prompt_len=8, response_len=16, batch_size=2, rounds=2)
GOAL = 1.15
SKIP_WITHOUT_CUDA = re.compile(r"skipif\(not torch\.cuda\.is_available\(\)")


def cuda_tests() -> list[str]:
    """Node ids of the tests marked to skip without CUDA (the next `def test_` after each marker)."""
    found = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if SKIP_WITHOUT_CUDA.search(line):
                name = next(m[1] for ln in lines[i + 1:] if (m := re.match(r"def (test_\w+)", ln)))
                found.append(f"{path.relative_to(ROOT)}::{name}")
    return found


def run_tests(ids: list[str]) -> str:
    """pytest's summary line for the CUDA tests (they skip on a machine without CUDA)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-rs", "-p", "no:cacheprovider", *ids],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(out.stdout[-3000:], out.stderr[-2000:], sep="\n", flush=True)
    counts = re.findall(r"\d+ (?:passed|failed|skipped|errors?|deselected)", out.stdout)
    return ", ".join(counts) + (" (no CUDA here: skipped)" if not torch.cuda.is_available() else "") or "(no output)"


def build(shape: dict, device: torch.device, dtype: torch.dtype, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    with device:  # initialised where it runs: 0.5B random weights on a CPU would take a minute
        model = Qwen2ForCausalLM(Qwen2Config(**shape))
    return model.to(dtype=dtype).eval()


def time_method(fn, policy, sft, ids, prompt_len, batch_size, device) -> tuple[float, int, object]:
    """(seconds, peak bytes above the models, result) of one call of a bench/score.py method."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with PeakRSS() as mem:  # the CPU's peak (bench/score.py's sampler); CUDA's from its allocator
        t0 = time.perf_counter()
        result = fn(policy, sft, ids, prompt_len, batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() - base if device.type == "cuda" else mem.peak - mem.base
    return seconds, peak, result


def logp_gap(bare_out, klviz_out, batch_size: int) -> float:
    """Largest |log-prob of the sampled token| difference, policy side, klviz against bare (a sanity check:
    both compute the same numbers in float32)."""
    bare = torch.cat([bare_out[i] for i in range(0, len(bare_out), 2)]).reshape(-1)  # policy, sft, policy, ...
    order, cols = klviz_out
    assert order == sorted(order), "equal lengths keep the input order"
    return float((bare.double() - torch.as_tensor(cols["logp_policy"]).double()).abs().max())


def benchmark(shape: dict, work: dict, device: torch.device, dtype: torch.dtype) -> tuple[dict, float, int]:
    policy, sft = build(shape, device, dtype, 1), build(shape, device, dtype, 2)
    ids = make_inputs(work["n_seq"], work["prompt_len"], work["response_len"], vocab_size=shape["vocab_size"])
    args = (ids, work["prompt_len"], work["batch_size"], device)
    for fn in METHODS.values():  # warm-up: kernels, allocator, numba
        fn(policy, sft, ids[:work["batch_size"]], work["prompt_len"], work["batch_size"])
    runs = {m: [] for m in METHODS}
    gap = float("nan")
    for r in range(work["rounds"]):
        outs = {}
        for m, fn in METHODS.items():
            seconds, peak, outs[m] = time_method(fn, policy, sft, *args)
            runs[m].append((seconds, peak))
            print(f"round {r + 1} {m:6s} {seconds:8.3f} s  peak {peak / 2**20:9.1f} MiB", flush=True)
        gap = logp_gap(outs["bare"], outs["klviz"], work["batch_size"])
    n_params = sum(p.numel() for p in policy.parameters())
    return {m: {"best": min(s for s, _ in x), "median": statistics.median(s for s, _ in x),
                "peak": max(p for _, p in x)} for m, x in runs.items()}, gap, n_params


def table(results: dict, gap: float, n_params: int, name: str, shape: dict, work: dict, dtype, tests: str) -> str:
    bare = results["bare"]
    rows = [f"GPU check (bench/gpu.py) on **{name}**, torch {torch.__version__}. Random Qwen2, {n_params / 1e6:.0f}M "
            f"parameters (hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, vocabulary "
            f"{shape['vocab_size']:,}), {str(dtype).removeprefix('torch.')} weights, float32 math; {work['n_seq']} "
            f"sequences x ({work['prompt_len']} prompt + {work['response_len']} response) tokens, batch "
            f"{work['batch_size']}, best/median of {work['rounds']} rounds. CUDA tests: {tests}.", "",
            "| method | best time | median time | peak memory above the models | time vs bare (best / median) |",
            "|---|---|---|---|---|"]
    for m, x in results.items():
        rows.append(f"| {'**klviz**' if m == 'klviz' else m} | {x['best']:.3f} s | {x['median']:.3f} s | "
                    f"{x['peak'] / 2**20:.0f} MiB | {x['best'] / bare['best']:.2f}x / {x['median'] / bare['median']:.2f}x |")
    ratio = results["klviz"]["best"] / bare["best"]
    rows += ["", f"klviz / bare {ratio:.2f}x (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'}); "
                 f"largest |logp_policy| gap klviz vs bare: {gap:.2e} nats."]
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide Qwen2 (same vocabulary), tiny workload")
    ap.add_argument("--dry-run", action="store_true", help="= --device cpu --tiny: check the script here")
    ap.add_argument("--skip-tests", action="store_true", help="only the benchmark")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # klviz.device.resolve_dtype("auto")
    shape, work = (TINY, TINY_WORKLOAD) if args.tiny else (QWEN25_05B, WORKLOAD)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    tests = "not run" if args.skip_tests else run_tests(cuda_tests())
    results, gap, n_params = benchmark(shape, work, device, dtype)
    text = table(results, gap, n_params, name, shape, work, dtype, tests)
    print("\n" + text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
