"""A checkpoint series from the sample data, for the Trajectory page: `<out>/checkpoint-<step>` folders, as
the transformers Trainer names them, made by chained `klviz ppo` runs on the sample SFT model (each run
starts from the previous checkpoint with --policy-init, `--every` steps long; the optimizer restarts each
time, so this is a demo series, not one uninterrupted run). checkpoint-0 is the SFT model itself.

    python bench/sample_series.py --out /tmp/series [--checkpoints 4] [--every 10]
    klviz trajectory --sft sample_data/sft --checkpoints /tmp/series --prompts sample_data/prompts.jsonl \
        --max-new-tokens 24 --out /tmp/series.parquet && klviz dashboard /tmp/series.parquet

(`klviz ppo --save-every N` saves checkpoint-<step> folders from one uninterrupted run; this script keeps
a checkpoint-0, the SFT model itself, as the series' first point.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoints", type=int, default=4, help="checkpoints after checkpoint-0")
    ap.add_argument("--every", type=int, default=10, help="PPO steps between checkpoints")
    ap.add_argument("--reward", default="sentiment")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sft = ROOT / "sample_data" / "sft"
    shutil.copytree(sft, out / "checkpoint-0", dirs_exist_ok=True)
    prev = out / "checkpoint-0"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for k in range(1, args.checkpoints + 1):
        run = out / f"run-{k}"
        subprocess.run([sys.executable, "-m", "klviz", "ppo", "--sft", str(sft), "--policy-init", str(prev),
                        "--reward", args.reward, "--steps", str(args.every), "--batch-size", str(args.batch_size),
                        "--seed", str(k), "--device", "cpu", "--out", str(run)], check=True, env=env)
        dest = out / f"checkpoint-{k * args.every}"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(run / "policy"), dest)
        shutil.rmtree(run)
        prev = dest
        print(f"wrote {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
