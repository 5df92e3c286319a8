"""PPOConfig: every setting of the mini PPO, one docstring each, checked when built.

Defaults follow "The 37 implementation details of PPO" (Huang et al. 2022) and the small-model
settings of Ziegler et al. 2019 scaled to a model that trains live on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from klviz.device import DEVICES
from klviz.errors import KlvizError
from klviz.ppo.losses import KL_ESTIMATORS, KL_PLACEMENTS


BASE_LR = 3e-4
"""AdamW learning rate tuned on the 0.9M-parameter sample models."""
LR_REFERENCE_PARAMS = 1_000_000
"""Trainable parameters up to which the default learning rate is BASE_LR."""
MIN_DEFAULT_LR = 1e-6
"""Floor of the scaled default learning rate."""


def default_lr(n_trainable: int) -> float:
    """The learning rate PPOConfig(lr=None) trains with: BASE_LR x min(1, LR_REFERENCE_PARAMS / n).

    BASE_LR on a full SmolLM2-135M collapsed it in one step (approx-KL 5.8, entropy 3.9 -> 0.9);
    scaled by 1/n it is 2.2e-6 there, the order of TRL's defaults for full fine-tuning (3e-6), while
    a LoRA adapter's few trainable parameters keep a LoRA-sized rate.
    """
    return max(MIN_DEFAULT_LR, BASE_LR * min(1.0, LR_REFERENCE_PARAMS / max(1, n_trainable)))


def full_trainable_params(model) -> int:
    """What a full-weight run on `model` trains (lora_rank 0): its weights (tied ones once, as
    `parameters()` yields them) and the value head, hidden -> 1 (klviz.ppo.trainer)."""
    hidden = model.get_output_embeddings().weight.shape[1]
    return sum(p.numel() for p in model.parameters()) + hidden + 1


@dataclass
class PPOConfig:
    """Settings of one PPO run. Invalid values raise KlvizError naming the setting."""

    reward: str = "sentiment"
    """Reward name for klviz.ppo.rewards.get_reward: sentiment | length | keyword:WORD | module:function | folder."""
    steps: int = 60
    """PPO iterations (each: one rollout batch, then ppo_epochs x minibatches updates)."""
    batch_size: int = 64
    """Responses sampled per step."""
    max_new_tokens: int = 16
    """Longest response; generation stops earlier for a response that emits EOS."""
    ppo_epochs: int = 4
    """Passes over each rollout batch."""
    minibatches: int = 4
    """Minibatches per pass (batch_size / minibatches responses each)."""
    kl_placement: str = "reward"
    """Where the KL term goes: "reward" (per-token penalty, InstructGPT), "loss" (GRPO) or "none"."""
    kl_estimator: str = "k1"
    """Per-token KL term: k1 | k2 | k3 (Schulman's estimators) | exact-reverse | exact-forward."""
    kl_coef: float = 0.05
    """beta: weight of the KL term (the start value when target_kl is set)."""
    target_kl: float | None = None
    """If set, adapt beta toward this KL (nats per response) with Ziegler et al.'s controller."""
    kl_horizon: int = 10000
    """Controller horizon in responses (Ziegler et al. 2019 use 10000)."""
    lr: float | None = None
    """AdamW learning rate for the policy and value head; None: default_lr(trainable parameters),
    BASE_LR (3e-4) for the sample models, scaled down for larger ones."""
    lora_rank: int = 0
    """0: train every weight of a private copy of the SFT model. r > 0: train a rank-r LoRA adapter on
    every linear layer but the head; the reference is the base with the adapter off (no second copy)."""
    max_approxkl: float | None = 1.0
    """The limit on one update's approx-KL (pi_old to the updated policy, nats per token; healthy PPO
    stays near 0.01). In the first `approxkl_watch_steps` steps, passing it stops the run with a
    sentence: the learning rate is too high for the model (3e-4 blew SmolLM2-135M up at step 1). Later,
    the update skips its remaining epochs instead (cleanrl's target_kl early stop): the sample pair's
    run at the page's defaults passed it once at step 114 (1.37) with its reward still rising. A NaN
    stops the run at any step. None turns both off."""
    approxkl_watch_steps: int = 10
    """The first steps in which passing max_approxkl stops the run (see there)."""
    gamma: float = 1.0
    """Discount over response tokens (1: the task reward counts fully at every token)."""
    lam: float = 0.95
    """GAE lambda."""
    cliprange: float = 0.2
    """PPO ratio clip epsilon."""
    cliprange_value: float = 0.2
    """Clip of the value prediction's change from the rollout's value."""
    vf_coef: float = 0.1
    """Weight of the value loss (value head and policy share the trunk)."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip."""
    temperature: float = 1.0
    """Sampling temperature; every log-prob (policy and reference) is of logits / temperature."""
    seed: int = 0
    """Seeds prompt order, sampling and minibatch order: a run repeats exactly on one machine."""
    device: str = "auto"
    """auto (CUDA, then MPS, then CPU), cpu, cuda or mps."""
    bands_every: int = 5
    """Record mass-moved bands on steps 1, 1 + bands_every, ...; 0 turns them off."""
    log_exact_kl: bool = True
    """Log the exact full-vocabulary kl_reverse / kl_forward every step (off only to benchmark its cost:
    then they appear on band steps only, and whenever an exact estimator or target_kl needs them)."""

    def __post_init__(self) -> None:
        positive_ints = ("steps", "batch_size", "max_new_tokens", "ppo_epochs", "minibatches", "kl_horizon",
                         "approxkl_watch_steps")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise KlvizError(f"PPO setting {name} must be a whole number >= 1, got {value!r}.")
        if self.kl_placement not in KL_PLACEMENTS:
            raise KlvizError(f"Unknown KL placement {self.kl_placement!r}: use one of {', '.join(KL_PLACEMENTS)}.")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise KlvizError(f"Unknown KL estimator {self.kl_estimator!r}: use one of {', '.join(KL_ESTIMATORS)}.")
        if not self.kl_coef >= 0:  # also rejects NaN
            raise KlvizError(f"The KL coefficient beta (kl_coef) must be >= 0, got {self.kl_coef}.")
        if self.target_kl is not None and not self.target_kl > 0:
            raise KlvizError(f"target_kl must be > 0 (nats per response), got {self.target_kl}.")
        if self.minibatches > self.batch_size:
            raise KlvizError(f"minibatches ({self.minibatches}) cannot exceed batch_size ({self.batch_size}).")
        for name in ("lr", "max_approxkl"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise KlvizError(f"PPO setting {name} must be > 0, got {getattr(self, name)}.")
        for name in ("cliprange", "cliprange_value", "max_grad_norm", "temperature"):
            if not getattr(self, name) > 0:
                raise KlvizError(f"PPO setting {name} must be > 0, got {getattr(self, name)}.")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise KlvizError(f"PPO setting {name} must lie in [0, 1], got {getattr(self, name)}.")
        if not self.vf_coef >= 0:
            raise KlvizError(f"PPO setting vf_coef must be >= 0, got {self.vf_coef}.")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise KlvizError(f"lora_rank must be a whole number >= 0 (0: no LoRA), got {self.lora_rank!r}.")
        if not isinstance(self.bands_every, int) or self.bands_every < 0:
            raise KlvizError(f"bands_every must be a whole number >= 0, got {self.bands_every!r}.")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise KlvizError(f"Unknown device {self.device!r}: use one of {', '.join(DEVICES)}.")
        if not self.reward or not isinstance(self.reward, str):
            raise KlvizError("The reward name is empty: use sentiment, length, keyword:WORD, "
                             "module:function or a reward-model folder.")
