"""The two sample policies: klviz's mini PPO from the SFT model against the `sentiment` reward.

Both runs share reward, beta (kl_coef), learning rate, steps and seed and differ only in where the
KL to the SFT model enters (the comparison the app is for):
  - policy/          KL(policy || SFT) estimated with k1 = log(pi/pi_sft) per sampled token and
                     subtracted from the reward, as in InstructGPT (Ouyang et al. 2022);
  - policy_k3_loss/  k3 = (r - 1) - log r, r = pi_sft/pi (Schulman, "Approximating KL
                     divergence"), added to the loss, as in GRPO (Shao et al. 2024).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from klviz.ppo.config import BASE_LR, PPOConfig

from klviz.ppo.trainer import PPOTrainer

RUNS: dict[str, tuple[str, str]] = {
    "policy": ("reward", "k1"),
    "policy_k3_loss": ("loss", "k3"),
}
"""Folder -> (kl_placement, kl_estimator)."""
POLICY_FOLDERS = tuple(RUNS)

FOLDER_MODE = 0o755
"""Permissions of a saved policy folder (the trainer saves through a private mkdtemp folder)."""

METRICS_KEPT = ("reward_mean", "kl_reverse")
"""PPO metrics recorded per step in the manifest (when the trainer reports them)."""


@dataclass(frozen=True)
class PolicyConfig:
    """Settings shared by both PPO runs: fields of klviz.ppo.trainer.PPOConfig, with its defaults unless noted."""

    reward: str = PPOConfig.reward
    """Reward name in klviz.ppo.rewards."""
    steps: int = PPOConfig.steps
    """PPO steps (each: one batch of rollouts, then ppo_epochs of minibatch updates)."""
    batch_size: int = PPOConfig.batch_size
    """Rollouts per step."""
    max_new_tokens: int = PPOConfig.max_new_tokens
    """Response length cap."""
    ppo_epochs: int = PPOConfig.ppo_epochs
    """Passes over each batch of rollouts."""
    minibatches: int = PPOConfig.minibatches
    """Minibatches per pass."""
    kl_coef: float = PPOConfig.kl_coef
    """beta: weight of the KL to the SFT model, the same in both runs."""
    lr: float = BASE_LR
    """AdamW learning rate of the policy."""
    seed: int = PPOConfig.seed
    """Seeds sampling and minibatch order."""
    device: str = "cpu"
    """Where PPO runs (not PPOConfig's "auto"): the models are tiny, and CPU keeps the files the same
    on machines with a GPU."""

    @classmethod
    def quick(cls) -> "PolicyConfig":
        """A few small steps: enough to exercise the pipeline in tests."""
        return cls(steps=2, batch_size=16, ppo_epochs=1, minibatches=2)


def train_one(sft_model, tokenizer, prompts: list[str], folder: Path, cfg: PolicyConfig,
              placement: str, estimator: str, log: Callable[[str], None]) -> dict:
    """One PPO run from `sft_model` (left untouched); saves the policy and tokenizer to `folder`."""
    # Every PolicyConfig field is a PPOConfig field of the same name; only the KL term differs per run.
    ppo_cfg = PPOConfig(**asdict(cfg), kl_placement=placement, kl_estimator=estimator)
    trainer = PPOTrainer(sft_model, tokenizer, prompts, ppo_cfg)  # trains its own copy
    started, history = time.perf_counter(), []
    for step in range(cfg.steps):
        metrics = trainer.step()
        history.append({k: float(metrics[k]) for k in METRICS_KEPT if k in metrics})
        log(f"{folder.name} step {step + 1}/{cfg.steps}  "
            + "  ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
    trainer.save(folder)  # weights (safetensors) and tokenizer, via a private temporary folder
    folder.chmod(FOLDER_MODE)
    return {"kl_placement": placement, "kl_estimator": estimator, "history": history,
            "seconds": time.perf_counter() - started}


def train_policies(sft_model, tokenizer, prompts: list[str], out: Path, cfg: PolicyConfig,
                   log: Callable[[str], None]) -> dict:
    """Both runs of RUNS, each saved to out/<folder>. Returns {folder: facts}."""
    return {
        folder: train_one(sft_model, tokenizer, prompts, out / folder, cfg, placement, estimator, log)
        for folder, (placement, estimator) in RUNS.items()
    }
