"""Benchmark: `klviz score --ray` against the single process, end to end, on bench/score.py's workload.

Same models and inputs as bench/score.py (random Llama, hidden 512, 8 layers, vocabulary 32,000;
64 sequences of 64 prompt + 128 response token ids = 8,192 response tokens; batch 8), saved to a
temporary folder with the tiny test tokenizer (ids are given directly, so it only decodes) and run
through the real command line, each run in its own process, taking turns round after round:

  single       klviz score                       (one process, every core)
  ray xN       klviz score --ray --actors N      (starts a local Ray cluster, N actors sharing the cores)

Wall time includes everything a user waits for: Python start, model loading, and for Ray the
cluster start and each actor's imports and loading. Also reported per run: throughput in response
tokens per second. On a GPU machine, `--device cuda --actors 1,<GPUs>` measures 1 actor against all
(one GPU each); not measured on the 2-core box. `--n-seq` smaller than 64 is a REDUCED workload and
the table says so. Usage: python bench/ray.py [--rounds 1] [--actors 1,2] [--n-seq 64] [--device cpu]
Where the Ray run's seconds go, phase by phase: bench/ray_phases.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_score", ROOT / "bench" / "score.py")
bench_score = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_score)
FULL_N_SEQ = 64


def prepare(folder: Path, args) -> tuple[Path, Path, Path]:
    """bench/score.py's two models (seeds 1, 2) and inputs, as checkpoints and a JSONL of ids."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers.tiny import make_tokenizer

    tok = make_tokenizer()
    paths = []
    for name, seed in (("policy", 1), ("sft", 2)):
        model = bench_score.build("cpu", bench_score.torch.float32, seed)
        model.save_pretrained(str(folder / name))
        tok.save_pretrained(str(folder / name))
        paths.append(folder / name)
    ids = bench_score.make_inputs(args.n_seq, args.prompt_len, args.response_len)
    inp = folder / "in.jsonl"
    inp.write_text("".join(json.dumps({"prompt_ids": row[:args.prompt_len].tolist(),
                                       "response_ids": row[args.prompt_len:].tolist()}) + "\n" for row in ids))
    return paths[0], paths[1], inp


def run_once(method: str, policy: Path, sft: Path, inp: Path, out: Path, args) -> float:
    cmd = [sys.executable, "-m", "klviz", "score", "--policy", str(policy), "--sft", str(sft), "--input", str(inp),
           "--out", str(out), "--batch-size", str(args.batch_size), "--device", args.device, "--dtype", "float32"]
    if method != "single":
        cmd += ["--ray", "--actors", method.removeprefix("ray x")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    return seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-seq", type=int, default=FULL_N_SEQ)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--response-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--actors", default="1,2", help="comma-separated pool sizes to time")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    methods = ["single"] + [f"ray x{n}" for n in args.actors.split(",")]
    times = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(prefix="klviz-bench-ray-") as tmp:
        policy, sft, inp = prepare(Path(tmp), args)
        for r in range(args.rounds):
            for m in methods:
                times[m].append(run_once(m, policy, sft, inp, Path(tmp) / "out.parquet", args))
                print(f"round {r + 1} {m:8s} {times[m][-1]:8.2f} s", flush=True)
    n_tok = args.n_seq * args.response_len
    reduced = "" if args.n_seq >= FULL_N_SEQ else f" (REDUCED workload: {args.n_seq} of {FULL_N_SEQ} sequences)"
    single = min(times["single"])
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, device {args.device}, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; {args.n_seq} seqs x ({args.prompt_len} "
          f"prompt + {args.response_len} response) = {n_tok} response tokens, batch {args.batch_size}{reduced}\n")
    print("| run | best wall time | median | response tokens/s | vs single (best) |")
    print("|---|---|---|---|---|")
    for m, ts in times.items():
        print(f"| {m} | {min(ts):.2f} s | {statistics.median(ts):.2f} s | {n_tok / min(ts):.0f} | "
              f"{min(ts) / single:.2f}x |")
    print("\nGoal: the Ray path's overhead <= 1.2x the single process.")


if __name__ == "__main__":
    main()
