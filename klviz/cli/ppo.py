"""`klviz ppo`: train a policy from an SFT checkpoint with the mini PPO; write metrics.jsonl and policy/.

    klviz ppo --sft sample_data/sft --reward sentiment --steps 60 --out runs/beta0.05
    klviz ppo ... --save-every 10   # also DIR/checkpoint-10, -20, ...: a series for `klviz trajectory`

DIR/metrics.jsonl gets one JSON object per step, flushed as it is written (a run can be watched or
cut short); on band steps the line also holds the four length-7 band lists. DIR/policy/ is written
at the end, and with --save-every N the policy after every N-th step as DIR/checkpoint-<step>/ (the
transformers Trainer's name for them, which `klviz trajectory --checkpoints DIR` reads; a LoRA run
saves the merged model), each through a temporary folder, so none is ever half-written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from klviz.errors import KlvizError

SAMPLE_PROMPTS = Path(__file__).resolve().parents[2] / "sample_data" / "prompts.jsonl"
"""The shipped prompts, used when --prompts is not given."""
CONFIG_ARGS = {  # PPOConfig field -> (type, help); each flag's default is the field's default
    "reward": (str, "sentiment | length | keyword:WORD | module:function | reward-model folder"),
    "steps": (int, None), "batch_size": (int, None), "max_new_tokens": (int, None), "ppo_epochs": (int, None),
    "minibatches": (int, None), "kl_placement": (str, "reward (InstructGPT), loss (GRPO) or none"),
    "kl_estimator": (str, "k1 | k2 | k3 | exact-reverse | exact-forward"), "kl_coef": (float, "beta"),
    "target_kl": (float, "with --kl-horizon: adaptive beta (Ziegler et al. 2019)"), "kl_horizon": (int, None),
    "lr": (float, "learning rate; unset: 3e-4 x min(1, 1M / trainable parameters)"),
    "max_approxkl": (float, "an update's approx-KL limit: stops the run in its first steps, later ends the "
                            "update's epochs"),
    "approxkl_watch_steps": (int, "the first steps in which passing --max-approxkl stops the run"),
    "lora_rank": (int, "train a rank-r LoRA adapter (reference: the base, adapter off); 0: every weight"),
    "seed": (int, None), "device": (str, None),
}
"""The flags that map one-to-one onto PPOConfig fields."""
REQUIRED = ("reward", "steps")  # a run says what it optimises and for how long


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sft", required=True, help="SFT checkpoint (the frozen reference)")
    p.add_argument("--policy-init", default=None, help="start the policy from this checkpoint instead of the SFT model")
    from klviz.ppo.config import PPOConfig  # torch: imported only when this command is chosen (klviz.cli)

    defaults = {f.name: f.default for f in dataclasses.fields(PPOConfig)}
    for name, (type_, help_) in CONFIG_ARGS.items():
        shown = "required" if name in REQUIRED else f"default: {defaults[name]}"
        p.add_argument("--" + name.replace("_", "-"), type=type_, default=defaults[name], required=name in REQUIRED,
                       help=f"{help_} ({shown})" if help_ else shown)
    p.add_argument("--prompts", default=None, help="prompts file (default: the shipped sample prompts)")
    p.add_argument("--out", required=True, help="folder for metrics.jsonl and policy/")
    p.add_argument("--save-every", type=int, default=None, metavar="N",
                   help="also save the policy after every N-th step as OUT/checkpoint-<step> (a series for "
                        "`klviz trajectory`)")


def config_from_args(args):
    """klviz.ppo.config.PPOConfig from parsed arguments; a setting left as None keeps its field's default."""
    from klviz.ppo.config import PPOConfig

    return PPOConfig(**{name: getattr(args, name) for name in CONFIG_ARGS if getattr(args, name, None) is not None})


def load_prompts(path: str | Path | None) -> list[str]:
    """The prompts of a .txt or JSONL file as text (the shipped sample prompts by default); a chat
    prompt trains as its messages' text (`prompt_text`), as in the dashboard."""
    from klviz.prompts import prompt_text, read_prompts

    path = Path(path) if path is not None else SAMPLE_PROMPTS
    if path == SAMPLE_PROMPTS and not path.exists():
        raise KlvizError(f"The sample prompts {path} are missing: pass --prompts FILE "
                         "or run `klviz make-sample-data` first.")
    return [prompt_text(p) for p in read_prompts(path)]


def _json_value(value):
    """Floats that JSON can hold (NaN/inf become null), lists recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def run(args) -> int:
    """Entry point of `klviz ppo` (the parser lives in klviz.cli)."""
    from klviz.cli.common import log, quiet_transformers

    log("klviz ppo: starting (importing torch and transformers, then loading the models)")  # else ~10 s of silence
    from klviz.models import load_model
    from klviz.ppo.trainer import PPOTrainer

    quiet_transformers()
    cfg = config_from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise KlvizError(f"--out {out} is a file: give a folder for metrics.jsonl and policy/.")
    every = getattr(args, "save_every", None)
    if every is not None and every < 1:
        raise KlvizError(f"--save-every must be at least 1 step, got {every}.")
    prompts = load_prompts(getattr(args, "prompts", None))
    sft = load_model(args.sft, device=cfg.device, role="sft", log=log)
    init = load_model(args.policy_init, device=cfg.device, role="policy init", log=log) if args.policy_init else None
    trainer = PPOTrainer(sft.model, sft.tokenizer, prompts, cfg,
                         policy_init=init.model if init is not None else None,
                         share_sft=True)  # loaded for this run: LoRA goes on it, not on a copy
    if cfg.lr is None:
        print(f"klviz ppo: learning rate {trainer.lr:.2g} (scaled to the trainable parameters; set --lr to override)")
    out.mkdir(parents=True, exist_ok=True)
    with (out / "metrics.jsonl").open("w", encoding="utf-8") as f, \
            tqdm(total=cfg.steps, desc="ppo", unit="step") as bar:
        for step in range(1, cfg.steps + 1):
            metrics = trainer.step()
            f.write(json.dumps({k: _json_value(v) for k, v in metrics.items()}) + "\n")
            f.flush()
            if every and step % every == 0:
                trainer.save(out / f"checkpoint-{step}")
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}",
                            kl=f"{metrics.get('kl_reverse', metrics['k1']):.3f}")
            bar.update(1)
    trainer.save(out / "policy")
    saved = f", {cfg.steps // every} checkpoint-<step> folders" if every else ""
    print(f"klviz ppo: wrote {out / 'metrics.jsonl'}, {out / 'policy'}{saved}")
    return 0
