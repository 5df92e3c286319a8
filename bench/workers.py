"""Benchmark: the dashboard's analyses one after another, each in a new worker process (the baseline,
KLVIZ_REUSE_WORKERS=0) against the finished task's process reused (klviz.workers.REUSE, the default).

What a user waits for when they change the pair, the sampling settings or the responses file: the time
from AnalysisJob.start() to its table, on the shipped pair (sample_data/policy vs sample_data/sft).
Each side runs in its own fresh Python process (so both start with nothing imported) and runs --jobs
analyses in a row, each a different seed (a new table, as a changed setting gives); the first of each
side pays the worker's start either way. Sides alternate over --rounds; figures are medians.

Usage: python bench/workers.py [--jobs 4] [--rounds 2] [--prompts 8] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SIDE = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from klviz.analysis_job import AnalysisJob, PairSpec
from klviz.prompts import read_prompts
from klviz.settings import SamplingSettings

prompts = read_prompts({root!r} + "/sample_data/prompts.jsonl")[:{prompts}]
pair = PairSpec({root!r} + "/sample_data/policy", {root!r} + "/sample_data/sft")
times = []
for seed in range({jobs}):
    t = time.perf_counter()
    job = AnalysisJob(pair, prompts, SamplingSettings(samples_per_prompt=1, max_new_tokens={tokens}, seed=seed)).start()
    assert job.join(600), "the analysis did not finish"
    snap = job.snapshot()
    assert snap.state == "done", snap.error
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def run_side(reuse: bool, args) -> list[float]:
    env = {**os.environ, "KLVIZ_REUSE_WORKERS": "1" if reuse else "0"}
    code = SIDE.format(root=str(ROOT), prompts=args.prompts, jobs=args.jobs, tokens=args.max_new_tokens)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args()
    sides = {"new process per analysis (KLVIZ_REUSE_WORKERS=0)": False, "reused worker (default)": True}
    runs: dict[str, list[list[float]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, reuse in sides.items():
            runs[name].append(run_side(reuse, args))
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.jobs} analyses in a row, "
          f"{args.prompts} prompts x 1 sample x {args.max_new_tokens} new tokens, {args.rounds} rounds")
    print("| side | first analysis, s | each later one, s (median) |")
    print("|---|---|---|")
    for name, rounds in runs.items():
        first = statistics.median(r[0] for r in rounds)
        later = statistics.median(t for r in rounds for t in r[1:])
        print(f"| {name} | {first:.2f} | {later:.2f} |")


if __name__ == "__main__":
    main()
