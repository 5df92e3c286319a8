"""Exact categorical math behind the KL lab and `klviz claims`.

A policy pi and a reference (SFT) distribution ref over K actions are float64 vectors, shape (K,).
Every KL names its direction:
    kl_reverse = KL(pi || ref) = sum_a pi(a) log(pi(a) / ref(a))   (InstructGPT's penalty)
    kl_forward = KL(ref || pi) = sum_a ref(a) log(ref(a) / pi(a))
Estimators follow Schulman, "Approximating KL Divergence" (2020), with a ~ pi and
log_ratio(a) = log(pi(a) / ref(a)):
    k1 = log_ratio,  k2 = log_ratio**2 / 2,  k3 = exp(-log_ratio) - 1 + log_ratio
(his r is ref/pi, so k3 = (r - 1) - log r). Gradients are taken with respect to the policy logits
theta, pi = softmax(theta), where grad_theta log pi(a) = e_a - pi. Which gradient each placement of
an estimator gives (in the reward or in the loss) is the subject of "A Comedy of Estimators" (2025)
and "Rethinking KL Regularization in RLHF" (2025); here every expectation is an exact sum over a.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from klviz.engine.estimators import estimators
from klviz.errors import KlvizError

ESTIMATORS = ("k1", "k2", "k3")
SCHULMAN_MUS = (0.1, 1.0)  # the two rows of Schulman's table: q = N(0, 1), p = N(mu, 1)


def as_distribution(values, kind: str = "probabilities", name: str = "policy") -> np.ndarray:
    """Validate one column of the lab's table and return it as a distribution, shape (K,).

    `kind` is "probabilities" (non-negative weights, normalised here) or "logits" (softmaxed).
    Raises KlvizError with one sentence for an empty cell, a negative or zero probability.
    """
    try:
        v = np.array(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise KlvizError(f"The {name} column must hold numbers only; fix the text cell.") from None
    if v.size < 2:
        raise KlvizError(f"The {name} column needs at least two actions; add a row.")
    if not np.all(np.isfinite(v)):
        raise KlvizError(f"Every {name} cell needs a finite number; fill in the empty cell.")
    if kind == "logits":
        return softmax(v)
    if np.any(v <= 0):
        raise KlvizError(
            f"The {name} probabilities must all be positive (a zero makes a log-ratio infinite); "
            "replace negative or zero cells with a small positive number such as 1e-6."
        )
    return v / v.sum()


def as_reward(values) -> np.ndarray:
    """Validate the lab's reward column, shape (K,); one-sentence KlvizError on an empty cell."""
    try:
        r = np.array(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise KlvizError("The reward column must hold numbers only; fix the text cell.") from None
    if not np.all(np.isfinite(r)):
        raise KlvizError("Every reward cell needs a finite number; fill in the empty cell.")
    return r


def highlighted_actions(policy: np.ndarray, ref: np.ndarray) -> tuple[int, int] | None:
    """(gained, lost): the action with the largest pi/ref (SFT low, policy high) and the one with the
    largest ref/pi (SFT high, policy low); None when pi equals ref to rounding."""
    lr = log_ratio(policy, ref)
    if np.max(np.abs(lr)) < 1e-12:
        return None
    return int(np.argmax(lr)), int(np.argmin(lr))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_ratio(policy: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """log(pi(a) / ref(a)) per action, shape (K,)."""
    return np.log(policy) - np.log(ref)


def kl_contributions(policy: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-action terms (reverse, forward): pi log(pi/ref) of KL(pi||ref), ref log(ref/pi) of KL(ref||pi)."""
    lr = log_ratio(policy, ref)
    return policy * lr, -ref * lr


def kl_reverse(policy: np.ndarray, ref: np.ndarray) -> float:
    """KL(pi || ref) = sum_a pi(a) log(pi(a) / ref(a))."""
    return float(np.sum(kl_contributions(policy, ref)[0]))


def kl_forward(policy: np.ndarray, ref: np.ndarray) -> float:
    """KL(ref || pi) = sum_a ref(a) log(ref(a) / pi(a))."""
    return float(np.sum(kl_contributions(policy, ref)[1]))


def estimator_values(lr: np.ndarray) -> dict[str, np.ndarray]:
    """k1, k2, k3 of Schulman's note as functions of log_ratio = log(pi/ref); any shape."""
    return estimators(np.asarray(lr, dtype=np.float64))


def estimator_derivatives(lr: np.ndarray) -> dict[str, np.ndarray]:
    """d k / d log_ratio for k1, k2, k3; the chain rule then multiplies by grad log pi(a)."""
    lr = np.asarray(lr, dtype=np.float64)
    return {"k1": np.ones_like(lr), "k2": lr, "k3": -np.expm1(-lr)}


def estimator_moments(policy: np.ndarray, ref: np.ndarray) -> dict[str, tuple[float, float]]:
    """Exact (mean, variance) of k1, k2, k3 under a ~ pi; the target is KL(pi || ref)."""
    out = {}
    for name, k in estimator_values(log_ratio(policy, ref)).items():
        mean = float(np.sum(policy * k))
        out[name] = (mean, float(np.sum(policy * (k - mean) ** 2)))
    return out


def sample_moments(lr_samples: np.ndarray) -> dict[str, tuple[float, float]]:
    """Sample (mean, variance) of k1, k2, k3 over log-ratio samples, shape (n,)."""
    return {n: (float(k.mean()), float(k.var(ddof=1))) for n, k in estimator_values(lr_samples).items()}


def sample_log_ratios(policy: np.ndarray, ref: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """log(pi(a)/ref(a)) for n actions a ~ pi, shape (n,)."""
    actions = rng.choice(policy.size, size=n, p=policy)
    return log_ratio(policy, ref)[actions]


def running_mean(samples: np.ndarray) -> np.ndarray:
    """Mean of the first n samples for n = 1..len(samples), shape (n,)."""
    return np.cumsum(samples) / np.arange(1, samples.size + 1)


def gaussian_moments(mu: float) -> dict[str, tuple[float, float]]:
    """Exact (mean, variance) of k1, k2, k3 in Schulman's setting: x ~ q = N(0,1), p = N(mu,1).

    Target KL(q || p) = mu^2 / 2. With log_ratio = log(q(x)/p(x)) = mu^2/2 - mu*x ~ N(mu^2/2, mu^2):
    k1: mean mu^2/2, var mu^2.  k2 = log_ratio^2/2: mean mu^2/2 + mu^4/8, var (2 mu^4 + mu^6)/4
    (Var Y^2 = 2 s^4 + 4 m^2 s^2 for Y ~ N(m, s^2)).  k3 = (r - 1) - log r with r = p/q = e^(-Y):
    E r = 1 so mean mu^2/2; Var(r - log r) = (e^(mu^2) - 1) + mu^2 - 2 Cov(r, log r), Cov = mu^2.
    """
    m2, m4 = mu**2, mu**4
    return {
        "k1": (m2 / 2, m2),
        "k2": (m2 / 2 + m4 / 8, (2 * m4 + mu**6) / 4),
        "k3": (m2 / 2, math.expm1(m2) - m2),
    }


def gaussian_log_ratios(mu: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """log(q(x)/p(x)) = mu^2/2 - mu*x for n draws x ~ q = N(0, 1), shape (n,)."""
    return mu**2 / 2 - mu * rng.standard_normal(n)


def relative_errors(moments: dict[str, tuple[float, float]], true_kl: float) -> dict[str, tuple[float, float]]:
    """(bias / true, std / true) per estimator, Schulman's table's columns; NaN when true_kl is 0."""
    if true_kl <= 0:
        return {n: (math.nan, math.nan) for n in moments}
    return {n: ((m - true_kl) / true_kl, math.sqrt(max(v, 0.0)) / true_kl) for n, (m, v) in moments.items()}


def estimator_table(policy, ref, n: int, seed: int, mus=SCHULMAN_MUS) -> list[dict]:
    """Schulman's table, exact and from n fixed-seed samples, for each mu and for (pi, ref) if given."""
    rng = np.random.default_rng(seed)
    cases = [(f"Gaussian mu={mu:g}", mu**2 / 2, gaussian_moments(mu), gaussian_log_ratios(mu, n, rng))
             for mu in mus]
    if policy is not None:
        cases.append(("edited pi vs SFT", kl_reverse(policy, ref), estimator_moments(policy, ref),
                      sample_log_ratios(policy, ref, n, rng)))
    rows = []
    for case, true_kl, exact, samples in cases:
        ex, sa = relative_errors(exact, true_kl), relative_errors(sample_moments(samples), true_kl)
        for name in ESTIMATORS:
            rows.append({"case": case, "estimator": name, "true KL": true_kl,
                         "bias/true (exact)": ex[name][0], "std/true (exact)": ex[name][1],
                         "bias/true (sampled)": sa[name][0], "std/true (sampled)": sa[name][1]})
    return rows


def grad_log_policy(policy: np.ndarray) -> np.ndarray:
    """Jacobian of log pi(a) w.r.t. the logits, shape (K actions, K logits): row a is e_a - pi."""
    return np.eye(policy.size) - policy[None, :]


def grad_kl_reverse(policy: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """grad_theta KL(pi || ref) = pi * (log(pi/ref) - KL(pi || ref)), shape (K,)."""
    return policy * (log_ratio(policy, ref) - kl_reverse(policy, ref))


def grad_kl_forward(policy: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """grad_theta KL(ref || pi) = pi - ref, shape (K,)."""
    return policy - ref


def reward_placement_grad(policy, ref, estimator: str, beta: float) -> np.ndarray:
    """Expected REINFORCE gradient with reward -beta * k(a): E_pi[-beta k(a) grad log pi(a)], (K,).

    The estimator is a reward, so no gradient flows through k itself (it is detached).
    """
    k = estimator_values(log_ratio(policy, ref))[estimator]
    return -beta * (policy * k) @ grad_log_policy(policy)


def loss_placement_grad(policy, ref, estimator: str) -> np.ndarray:
    """Expected gradient of k as a loss with the samples held fixed: E_pi[grad k(a)], shape (K,).

    grad k(a) = k'(log_ratio(a)) * grad log pi(a); the sampling weights pi get no gradient.
    """
    dk = estimator_derivatives(log_ratio(policy, ref))[estimator]
    return (policy * dk) @ grad_log_policy(policy)


def gradient_table(policy: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """Penalty gradients, all to be descended: reward placement as E_pi[k grad log pi]
    (the REINFORCE gradient of reward -beta*k divided by -beta), loss placement, and both exact KLs."""
    out = {f"{k} in reward": -reward_placement_grad(policy, ref, k, 1.0) for k in ESTIMATORS}
    out |= {f"{k} as loss": loss_placement_grad(policy, ref, k) for k in ESTIMATORS}
    out["grad KL(pi||ref)"] = grad_kl_reverse(policy, ref)
    out["grad KL(ref||pi)"] = grad_kl_forward(policy, ref)
    return out


def optimal_policy_reverse(ref: np.ndarray, reward: np.ndarray, beta: float) -> np.ndarray:
    """argmax_pi E_pi[r] - beta KL(pi || ref) = ref * exp(r / beta) / Z."""
    return softmax(np.log(ref) + np.asarray(reward, dtype=np.float64) / beta)


def optimal_policy_forward(ref: np.ndarray, reward: np.ndarray, beta: float) -> np.ndarray:
    """argmax_pi E_pi[r] - beta KL(ref || pi).

    Stationarity of E_pi[r] + beta sum ref log pi - lam (sum pi - 1) gives pi(a) = beta ref(a) / (lam - r(a))
    with lam > max r. f(lam) = sum_a beta ref(a) / (lam - r(a)) decreases from +inf to 0, so sum pi = 1
    has one root, bracketed by lam - max r in [beta * ref(argmax r), beta] (f >= 1 and f <= 1 there);
    the objective is concave in pi, so this stationary point is the maximum.
    """
    r = np.asarray(reward, dtype=np.float64)
    r_max = r.max()
    lo, hi = beta * ref[np.argmax(r)], beta  # bracket on t = lam - max r
    for _ in range(200):  # bisection; stops once lo and hi are adjacent floats (~60 steps)
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if np.sum(beta * ref / (r_max + mid - r)) > 1.0:
            lo = mid
        else:
            hi = mid
    pi = beta * ref / (r_max + hi - r)
    return pi / pi.sum()


@dataclass(frozen=True)
class BoundSearch:
    """Worst case found for the bound KL(new||old) <= KL(old||new) / min_y old(y)."""

    ratio: float
    """max over searched pairs of KL(new || old) * min old / KL(old || new); the bound holds iff <= 1."""
    old: np.ndarray
    """the old distribution of the worst pair, shape (K,)"""
    new: np.ndarray
    """the new distribution of the worst pair, shape (K,)"""
    n_pairs: int
    """how many pairs the random search drew (before local optimisation)"""


def bound_ratio(old_logits: np.ndarray, new_logits: np.ndarray) -> np.ndarray:
    """KL(new||old) * min old / KL(old||new) per row of (B, K) logits; -inf where old ~= new."""
    old, new = softmax(old_logits), softmax(new_logits)
    lr = np.log(old) - np.log(new)
    kl_old_new, kl_new_old = np.sum(old * lr, axis=-1), -np.sum(new * lr, axis=-1)
    ok = kl_old_new > 1e-12  # below this the ratio is 0/0 in floating point
    return np.where(ok, kl_new_old * old.min(axis=-1) / np.where(ok, kl_old_new, 1.0), -np.inf)


def search_bound_worst_case(rng: np.random.Generator, sizes=(2, 3, 4, 6), n_random: int = 4000,
                            n_keep: int = 64, n_steps: int = 400) -> BoundSearch:
    """Random search then hill climbing (Gaussian steps on both logit vectors) for the largest ratio."""
    best = None
    for k in sizes:
        scale = rng.uniform(0.1, 4.0, size=(n_random, 1))  # from near-uniform to peaked pairs
        old, new = rng.normal(size=(n_random, k)) * scale, rng.normal(size=(n_random, k)) * scale
        ratio = bound_ratio(old, new)
        keep = np.argsort(ratio)[-n_keep:]
        old, new, ratio, step = old[keep], new[keep], ratio[keep], 0.5
        for _ in range(n_steps):
            d_old, d_new = rng.normal(size=old.shape) * step, rng.normal(size=new.shape) * step
            trial = bound_ratio(old + d_old, new + d_new)
            up = trial > ratio
            old[up], new[up], ratio[up] = old[up] + d_old[up], new[up] + d_new[up], trial[up]
            step *= 0.99
        i = int(np.argmax(ratio))
        if best is None or ratio[i] > best.ratio:
            best = BoundSearch(float(ratio[i]), softmax(old[i]), softmax(new[i]), len(sizes) * n_random)
    return best
