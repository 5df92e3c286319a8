"""A PPO run's time, estimated before it starts, from one measured forward pass of the model.

Why this way (issue 16: Live PPO's defaults would run for hours on a real model, with no estimate
shown). A step's time is almost all forward and backward passes over the batch's tokens, so it scales
with model size x tokens, and the device sets the speed. Rather than a FLOP count over a guessed
device throughput, `probe_seconds_per_token` times one short no-grad forward of the loaded model on
its own device (PROBE_TOKENS tokens, after a warm-up pass): that measures this model, dtype, thread
count and device together. It runs where the model already is, in the dashboard's analysis worker
once it has loaded the pair (klviz.analysis_job; ~0.5 s for SmolLM2 on two CPU cores, where the server
process paid 0.7-0.9 s on Live PPO's first visit before), and in the server only for models of at most
SERVER_PROBE_MAX_PARAMS (the shipped pair: milliseconds). The passes a step makes per token
(`FORWARD_EQUIVALENTS`) turn it into a step time; STEP_OVERHEAD, the ratio of a measured step of the
sample model to that formula on the same box, covers what the formula leaves out (token-by-token
sampling, the exact-KL columns, optimizer steps, the worker's single thread).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

PROBE_TOKENS = 32
"""Tokens in the timed forward pass (one row): short enough to bound the call on a large model."""
SERVER_PROBE_MAX_PARAMS = 5_000_000
"""Largest model the dashboard's server process times itself (3 passes of PROBE_TOKENS tokens: ~1 GFLOP,
tens of milliseconds); larger ones are timed by their analysis worker (heavy work stays out of the server)."""
STEP_OVERHEAD = 1.0
"""Measured step time / the formula without it, on the 2-core dev box (2026-11-29, PPO on 1 thread as the
worker runs it): 0.54 on the sample model (batch 32, 16 new tokens, 4 epochs x 4 minibatches, load
average ~5) and 1.7-2.0 on SmolLM2-135M (batch 8, 16 tokens, 1 epoch x 1 minibatch, load average
~20). 1.0 sits between them: the estimate is good to about a factor of two, enough to tell minutes
from hours before Start."""


def forward_equivalents(ppo_epochs: int) -> int:
    """Forward passes' worth of work per token in one PPO step (klviz.ppo.trainer.PPOTrainer.step).

    1 sampling the response + 1 the rollout policy's log-probs and values + 1 the reference's
    log-probs + ppo_epochs x 3 (a forward and a backward, which costs about two forwards).
    """
    return 3 + 3 * ppo_epochs


@dataclass(frozen=True)
class RunEstimate:
    """Estimated time of a PPO run; both figures in seconds."""

    step_s: float
    """One step (rollout, reference, ppo_epochs x minibatches of updates)."""
    total_s: float
    """The whole run: steps x step_s."""

    def describe(self) -> str:
        """e.g. "Estimated run time: about 12 min (18 s/step)"."""
        total = (f"{self.total_s / 3600:.1f} h" if self.total_s >= 5400 else
                 f"{self.total_s / 60:.0f} min" if self.total_s >= 90 else f"{self.total_s:.0f} s")
        step = f"{self.step_s:.2g} s/step" if self.step_s < 10 else f"{self.step_s:.0f} s/step"
        return f"Estimated run time: about {total} ({step})"


def estimate_run(seconds_per_token: float, steps: int, batch_size: int, prompt_tokens: float,
                 max_new_tokens: int, ppo_epochs: int) -> RunEstimate:
    """The run's time from the measured forward seconds per token (`probe_seconds_per_token`).

    Each step passes batch_size x (prompt_tokens + max_new_tokens) tokens (responses may stop earlier
    at EOS: an upper estimate) forward_equivalents(ppo_epochs) times, then STEP_OVERHEAD.
    """
    tokens = batch_size * (prompt_tokens + max_new_tokens)
    step_s = seconds_per_token * tokens * forward_equivalents(ppo_epochs) * STEP_OVERHEAD
    return RunEstimate(step_s, step_s * steps)


def probe_seconds_per_token(model, tokens: int = PROBE_TOKENS, threads: int | None = None, timed: int = 2) -> float:
    """Seconds per token of one no-grad forward of `model` on its device (best of `timed` passes, after an
    untimed warm-up), on `threads` torch threads (None: the process's setting; a worker passes what a lone
    PPO run gets)."""
    import contextlib

    from klviz.threads import torch_threads

    with torch_threads(threads) if threads else contextlib.nullcontext():
        return _best_pass(model, tokens, timed)


def _best_pass(model, tokens: int, timed: int) -> float:
    import torch

    device = model.get_input_embeddings().weight.device
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (1, tokens), generator=torch.Generator().manual_seed(0)).to(device)
    best = float("inf")
    with torch.no_grad():
        for i in range(1 + timed):  # the first pass allocates and warms caches: not timed
            t0 = time.perf_counter()
            model(input_ids=ids)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                best = min(best, time.perf_counter() - t0)
    return best / tokens
