"""`klviz ppo`: train a policy from an SFT checkpoint with the mini PPO; write metrics.jsonl and policy/.

    klviz ppo --sft sample_data/sft --reward sentiment --steps 60 --out runs/beta0.05

DIR/metrics.jsonl gets one JSON object per step, flushed as it is written (a run can be watched or
cut short); on band steps the line also holds the four length-7 band lists. DIR/policy/ is written
at the end through a temporary folder, so it is never half-written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from klviz.errors import KlvizError
from klviz.ppo import PPOConfig, PPOTrainer

SAMPLE_PROMPTS = Path(__file__).resolve().parent.parent / "sample_data" / "prompts.jsonl"
"""The shipped prompts, used when --prompts is not given."""
CONFIG_ARGS = ("reward", "steps", "batch_size", "max_new_tokens", "ppo_epochs", "minibatches",
               "kl_placement", "kl_estimator", "kl_coef", "target_kl", "kl_horizon", "lr", "seed", "device")
"""argparse dests that map one-to-one onto PPOConfig fields (None means: PPOConfig's default)."""


def config_from_args(args) -> PPOConfig:
    """PPOConfig from parsed arguments; unset (None) ones keep their defaults."""
    given = {name: getattr(args, name) for name in CONFIG_ARGS if getattr(args, name, None) is not None}
    return PPOConfig(**given)


def load_prompts(path: str | Path | None) -> list[str]:
    """Plain-text prompts from a .txt or JSONL file (the shipped sample prompts by default)."""
    from klviz.sampling import read_prompts

    path = Path(path) if path is not None else SAMPLE_PROMPTS
    if path == SAMPLE_PROMPTS and not path.exists():
        raise KlvizError(f"The sample prompts {path} are missing: pass --prompts FILE "
                         "or run `klviz make-sample-data` first.")
    prompts = read_prompts(path)
    chats = [p.origin for p in prompts if p.text is None]
    if chats:
        raise KlvizError(f"{chats[0]}: klviz ppo takes plain-text prompts, not chat messages.")
    return [p.text for p in prompts]


def _json_value(value):
    """Floats that JSON can hold (NaN/inf become null), lists recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def run(args) -> int:
    """Entry point of `klviz ppo` (the parser lives in klviz.cli)."""
    from klviz.models import load_model

    cfg = config_from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise KlvizError(f"--out {out} is a file: give a folder for metrics.jsonl and policy/.")
    prompts = load_prompts(getattr(args, "prompts", None))
    sft = load_model(args.sft, device=cfg.device, role="sft")
    init = load_model(args.policy_init, device=cfg.device, role="policy init") if args.policy_init else None
    trainer = PPOTrainer(sft.model, sft.tokenizer, prompts, cfg,
                         policy_init=init.model if init is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "metrics.jsonl").open("w", encoding="utf-8") as f, \
            tqdm(total=cfg.steps, desc="ppo", unit="step") as bar:
        for _ in range(cfg.steps):
            metrics = trainer.step()
            f.write(json.dumps({k: _json_value(v) for k, v in metrics.items()}) + "\n")
            f.flush()
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}",
                            kl=f"{metrics.get('kl_reverse', metrics['k1']):.3f}")
            bar.update(1)
    trainer.save(out / "policy")
    print(f"klviz ppo: wrote {out / 'metrics.jsonl'} and {out / 'policy'}")
    return 0
