"""Schulman's sampled-token estimators of KL(policy || SFT), one definition for torch and numpy.

With r = log p(y)/q(y) at a token y ~ p (Schulman, "Approximating KL Divergence", 2020):
    k1 = r,  k2 = r^2 / 2,  k3 = exp(-r) - 1 + r.
Used by the token table (klviz.engine), the mini PPO's loss (klviz.ppo.losses, differentiated
through) and the KL lab (klviz.lab.toy, numpy float64). No torch or numpy import here.
"""

from __future__ import annotations


def _expm1(x):
    """exp(x) - 1, accurate near 0: torch's for a tensor (keeps autograd), numpy's otherwise."""
    if hasattr(x, "expm1"):  # a torch.Tensor
        return x.expm1()
    import numpy as np

    return np.expm1(x)


def estimators(log_ratio):
    """{"k1", "k2", "k3"} at each entry of log_ratio = log p(y) - log q(y): a tensor or an array."""
    return {"k1": log_ratio, "k2": 0.5 * log_ratio**2, "k3": _expm1(-log_ratio) + log_ratio}
