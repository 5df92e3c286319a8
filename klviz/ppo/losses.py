"""The mini PPO's math: KL estimators, token rewards, GAE, whitening, the clipped losses, the controller.

Pure tensor functions, no models, so tests/unit/test_ppo_math.py checks each one against a hand
computation or an exact categorical expectation, and PPOTrainer calls these very functions.

Shapes: B responses, T response positions, V vocabulary entries. `mask` is Float[B, T], 1 on the
response's tokens (up to and including EOS), 0 after. All KL here is between the policy pi and the
frozen reference (the SFT model) ref, at response position t with context c_t:

    kl_reverse_t = KL(pi || ref) = sum_v pi(v|c_t) log(pi(v|c_t) / ref(v|c_t))
    kl_forward_t = KL(ref || pi) = sum_v ref(v|c_t) log(ref(v|c_t) / pi(v|c_t))

The sampled-token estimators (Schulman, "Approximating KL Divergence", 2020), with
r_t = log pi(y_t|c_t) - log ref(y_t|c_t) and y_t ~ pi:
    k1 = r_t,  k2 = r_t^2 / 2,  k3 = exp(-r_t) - 1 + r_t.
Each has expectation KL(pi || ref) (k1, k3 exactly; k2 to second order), but as a *loss* their
gradients differ ("A Comedy of Estimators", Shah et al. 2025; TRL issue #3025):
    E[grad k1] = 0,  E[grad k2] = grad KL(pi || ref),  E[grad k3] = grad KL(ref || pi).
Placed in the *reward*, k1 gives the REINFORCE gradient of KL(pi || ref) (InstructGPT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from klviz.engine.divergence import kl_exact
from klviz.engine.estimators import estimators
from klviz.errors import KlvizError

KL_ESTIMATORS = ("k1", "k2", "k3", "exact-reverse", "exact-forward")
"""Per-token KL terms: sampled-token estimators and the exact full-vocabulary sums."""

ESTIMATOR_METRIC = {"k1": "k1", "k2": "k2", "k3": "k3", "exact-reverse": "kl_reverse", "exact-forward": "kl_forward"}
"""The metric (token-table column and PPO metric) that holds each estimator's per-token values."""

KL_PLACEMENTS = ("reward", "loss", "none")
"""Where the KL term goes: token rewards (InstructGPT), the policy loss (GRPO), or nowhere."""

WHITEN_EPS = 1e-8
"""Added to the variance before whitening, as in TRL's masked_whiten."""


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the entries where mask is 1 (a scalar)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (Bessel-corrected) variance of x over the entries where mask is 1."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    sum_sq = (((x - mean) ** 2) * mask).sum()
    return sum_sq / (n - 1).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries ("The 37 implementation details of PPO", #7).

    Entries outside the mask are set to 0, so they cannot leak into a later unmasked sum.
    """
    return (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + WHITEN_EPS) * mask


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, name: str, *,
                logprobs: torch.Tensor | None = None,
                ref_logprobs: torch.Tensor | None = None) -> torch.Tensor:
    """The per-token KL term `name` at each sampled token; differentiable in the policy's inputs.

    logp: Float[...] log pi(y_t|c_t); ref_logp: Float[...] log ref(y_t|c_t).
    logprobs, ref_logprobs: Float[..., V] full log-softmax rows, needed by the exact terms only.
    Returns Float[...]: k1, k2, k3 (module docstring) or the exact kl_reverse_t / kl_forward_t.
    """
    if name in ("k1", "k2", "k3"):
        return estimators(logp - ref_logp)[name]  # r_t = log pi(y_t) - log ref(y_t); the engine's formulas
    if name in ("exact-reverse", "exact-forward"):
        if logprobs is None or ref_logprobs is None:
            raise ValueError(f"kl estimator {name!r} needs the full log-softmax rows")
        V = logprobs.shape[-1]
        kl_reverse, kl_forward = kl_exact(logprobs.reshape(-1, V), ref_logprobs.reshape(-1, V))  # (n,)
        out = kl_reverse if name == "exact-reverse" else kl_forward
        return out.reshape(logprobs.shape[:-1])
    raise KlvizError(f"Unknown KL estimator {name!r}: use one of {', '.join(KL_ESTIMATORS)}.")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor | None, mask: torch.Tensor,
                  kl_coef: float) -> torch.Tensor:
    """Per-token rewards: -kl_coef * kl_t at every token, plus the task score at the last token.

    scores: Float[B] (the reward model's or function's score of each whole response);
    kl: Float[B, T] detached KL term per token, or None for no penalty. Returns Float[B, T].
    The shaping follows Ziegler et al. 2019 and InstructGPT (Ouyang et al. 2022, eq. 2).
    """
    rewards = torch.zeros_like(mask) if kl is None else -kl_coef * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)  # (B,) index of each response's final token
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each response; (advantages, returns).

    rewards, values, mask: Float[B, T]. The episode ends after the last masked token, so V = 0
    beyond it. A_t = sum_{s >= t} (gamma lam)^(s-t) delta_s with delta_s = r_s + gamma V_{s+1} - V_s,
    computed as one [T, T] matrix product instead of the backward loop (the loop is the test's twin).
    """
    values, rewards = values * mask, rewards * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # V(s_{t+1})
    deltas = rewards + gamma * next_values - values  # (B, T)
    T = rewards.shape[1]
    lag = torch.arange(T)[None, :] - torch.arange(T)[:, None]  # lag[t, s] = s - t
    decay = torch.tensor(gamma * lam, dtype=rewards.dtype)
    discount = torch.where(lag >= 0, decay ** lag.clamp(min=0), torch.zeros((), dtype=rewards.dtype))
    advantages = deltas @ discount.to(deltas.device).T  # (B, T): sum_s deltas[b, s] * discount[t, s]
    advantages = advantages * mask
    return advantages, advantages + values


@dataclass
class PolicyLoss:
    """The clipped policy objective of one minibatch, and what to log about it."""

    per_token: torch.Tensor
    """Float[B, T]: clipped surrogate loss plus kl_coef * KL term, before the masked mean."""
    loss: torch.Tensor
    """Scalar: masked mean of per_token (what is differentiated)."""
    pg_loss: torch.Tensor
    """Scalar: the clipped surrogate part alone (detached)."""
    kl_loss: torch.Tensor
    """Scalar: the kl_coef * KL part alone (detached; 0 unless the KL is in the loss)."""
    clipfrac: torch.Tensor
    """Scalar: fraction of tokens where the clipped branch was taken."""
    approxkl: torch.Tensor
    """Scalar: k3 estimate of KL(pi_old || pi_new) on the minibatch's tokens (old vs new policy)."""


def policy_loss_terms(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, cliprange: float, kl: torch.Tensor | None = None,
                      kl_coef: float = 0.0) -> PolicyLoss:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), plus kl_coef * kl when the KL is a loss.

    logp, old_logp, advantages, mask: Float[B, T]; kl: Float[B, T] from `kl_estimate` with the
    *current* logp (so the loss is differentiated through the estimator, GRPO style), or None.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_per_token = torch.maximum(unclipped, clipped)  # pessimistic bound: max of the losses
    kl_per_token = torch.zeros_like(pg_per_token) if kl is None else kl_coef * kl
    per_token = pg_per_token + kl_per_token
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        # "The 37 implementation details of PPO" #12 (approxkl): k3 of the old/new ratio.
        approxkl = masked_mean(ratio - 1 - log_ratio, mask)
    return PolicyLoss(per_token=per_token, loss=masked_mean(per_token, mask),
                      pg_loss=masked_mean(pg_per_token, mask).detach(),
                      kl_loss=masked_mean(kl_per_token, mask).detach(), clipfrac=clipfrac,
                      approxkl=approxkl)


def value_loss(vpred: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss ("The 37 implementation details of PPO", #9); (loss, clipfrac).

    vpred, old_values, returns, mask: Float[B, T].
    loss = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)).
    """
    vpred_clipped = old_values + torch.clamp(vpred - old_values, -cliprange_value, cliprange_value)
    losses_unclipped = (vpred - returns) ** 2
    losses_clipped = (vpred_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(losses_unclipped, losses_clipped), mask)
    clipfrac = masked_mean((losses_clipped > losses_unclipped).float(), mask).detach()
    return loss, clipfrac


@dataclass
class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 (eq. 2), with TRL's n_steps / horizon gain.

    e = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_steps / horizon).
    """

    value: float
    """Current beta."""
    target: float
    """KL (nats per response) to steer toward."""
    horizon: int
    """Responses over which the controller closes most of the gap (Ziegler et al.: 10000)."""

    def update(self, current: float, n_steps: int) -> float:
        """Move beta after a batch of `n_steps` responses whose mean KL was `current`; return it."""
        proportional_error = min(max(current / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value
