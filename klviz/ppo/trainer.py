"""The mini PPO: a trainable copy of the SFT model pulled toward a reward, held back by a chosen KL term.

One `PPOTrainer.step()`:
  1. rollout: batch_size responses from prompts in a seeded order, one batched KV-cache sampling loop
     that also keeps pi_old's log-softmax rows and the values (klviz.ppo.rollout);
  2. scoring: one forward pass of the frozen reference (the SFT model) over the batch; the exact KL
     metrics come from its rows and the rollout's, under no_grad (no extra model pass);
  3. rewards: the task score at the last token; with kl_placement="reward" a per-token penalty
     -beta * estimate_t (Ziegler et al. 2019; InstructGPT, Ouyang et al. 2022);
  4. GAE(gamma, lambda), advantage whitening;
  5. ppo_epochs x minibatches of clipped policy loss + vf_coef * clipped value loss (with
     kl_placement="loss", + beta * mean estimate, differentiated through the estimator, GRPO style),
     gradient-norm clipping, AdamW ("The 37 implementation details of PPO", Huang et al. 2022);
  6. the adaptive KL controller (Ziegler et al.), when target_kl is set.
The SFT model passed in is never modified: the policy is a deep copy, and the reference is used
under no_grad only (or copied, if it lives elsewhere or is in training mode). With lora_rank, the
policy is one model with a LoRA adapter (klviz.ppo.lora) and the reference that model with the
adapter off: on a copy of the SFT model, or with share_sft on the SFT model itself (`klviz ppo`).
Before the first step the policy is checked savable (GGUF quantizer marks stripped), and each
step's approx-KL is watched (max_approxkl): in the first steps a blown-up update stops the run with
a sentence (the learning rate is too high for the model); later it ends that update's epochs early.

Why it is fast on a CPU (figures against TRL RLOO: bench/RESULTS.md): the sampling loop's outputs
stand in for a policy scoring pass; the reference and training passes run in length chunks that
skip padding; the policy copy's GPT-2 activation is the fused kernel of the same function
(klviz.ppo.rollout).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch

from klviz.device import resolve_device
from klviz.engine.columns import BAND_COLUMNS
from klviz.engine.divergence import kl_exact, token_stats
from klviz.errors import KlvizError
from klviz.io import atomic_folder
from klviz.models import strip_quantizer
from klviz.ppo.config import PPOConfig, default_lr
from klviz.ppo.lora import attach_lora, merged_copy, reference_mode
from klviz.ppo.losses import (AdaptiveKLController, PolicyLoss, gae, kl_estimate, policy_loss_terms,
                              token_rewards, value_loss, whiten)
from klviz.ppo.rollout import (Chunk, Rollout, fuse_activations, gather_tokens, length_chunks,
                               response_forward, sample, scale_logits)
from klviz.ppo.rewards import get_reward
from klviz.tokens import eos_ids, left_pad

__all__ = ["PPOTrainer"]

ADAM_EPS = 1e-5
"""AdamW epsilon ("The 37 implementation details of PPO", #3)."""


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _frozen_reference(sft_model, device: torch.device):
    """The SFT model itself when it already sits on `device` in eval mode, else a private frozen copy."""
    if _same_device(next(sft_model.parameters()).device, device) and not sft_model.training:
        return sft_model
    ref = copy.deepcopy(sft_model).to(device).eval()
    return ref.requires_grad_(False)


def _max_positions(model) -> int | None:
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


class PPOTrainer:
    """PPO on a deep copy of `sft_model` (or of `policy_init`), against the frozen `sft_model`."""

    def __init__(self, sft_model, tokenizer, prompts: list[str], cfg: PPOConfig | None = None,
                 policy_init=None, share_sft: bool = False):
        """share_sft: with cfg.lora_rank, put the adapter on `sft_model` itself rather than on a copy
        (the caller gives the model up: `klviz ppo`, which loaded it for this run, saves a copy's memory)."""
        self.cfg = cfg = cfg if cfg is not None else PPOConfig()
        self.tokenizer = tokenizer
        self.device = resolve_device(cfg.device)
        self.reward = get_reward(cfg.reward, tokenizer)
        source = policy_init if policy_init is not None else sft_model
        vocab = sft_model.get_output_embeddings().weight.shape[0]
        if source.get_output_embeddings().weight.shape[0] != vocab:
            raise KlvizError("The policy-init checkpoint's vocabulary differs from the SFT model's: "
                             "start from a checkpoint fine-tuned from the same SFT model.")
        self.lora = None  # the PeftModel when training a LoRA adapter
        if cfg.lora_rank:
            if policy_init is not None:
                raise KlvizError("LoRA training (lora_rank) puts an adapter on the SFT model, whose weights are "
                                 "also the reference: it cannot start from a policy-init checkpoint.")
            base = sft_model if share_sft else copy.deepcopy(sft_model)
            # eval(): dropout off, so the ratio pi/pi_old is 1 before the first update (TRL does the same).
            base = base.to(device=self.device).eval()
            strip_quantizer(base, "The SFT model")  # checked now, not after the run (klviz.models)
            self.lora = attach_lora(base, cfg.lora_rank)
            self.policy = self.ref = self.lora.get_base_model()  # ref: under reference_mode (adapter off)
        else:
            self.ref = _frozen_reference(sft_model, self.device)
            self.policy = copy.deepcopy(source).to(device=self.device, dtype=torch.float32).eval()
            # Checked now, not after the run: a GGUF-born model must be plain to save (klviz.models).
            strip_quantizer(self.policy, "The SFT model" if policy_init is None else "The policy-init model")
            self.policy.requires_grad_(True)
        fuse_activations(self.policy)  # same function, one kernel (bench/RESULTS.md)
        hidden_size = self.policy.get_output_embeddings().weight.shape[1]
        self.value_head = torch.nn.Linear(hidden_size, 1).to(self.device)
        torch.nn.init.zeros_(self.value_head.weight)  # V = 0 to start: deterministic, no seed needed
        torch.nn.init.zeros_(self.value_head.bias)
        params = [p for p in self.policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.lr = cfg.lr if cfg.lr is not None else default_lr(sum(p.numel() for p in params))
        self.optimizer = torch.optim.AdamW(params, lr=self.lr, eps=ADAM_EPS, weight_decay=0.0, foreach=True)
        self.kl_coef = cfg.kl_coef
        self.kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
                       if cfg.target_kl is not None else None)
        self._prompts, self._prompt_ids = self._tokenize_prompts(prompts)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # -1 when there is none: no EOS, every response runs to max_new_tokens.
        self.eos_ids = eos_ids(self.policy, tokenizer) or [-1]
        self._order_gen = torch.Generator().manual_seed(cfg.seed)  # prompt and minibatch order (CPU)
        self._sample_gen = torch.Generator(device=self.device).manual_seed(cfg.seed)  # token sampling
        self._order: list[int] = []
        self.step_count = 0
        self.last_rollout: Rollout | None = None

    def _tokenize_prompts(self, prompts: list[str]) -> tuple[list[str], list[list[int]]]:
        prompts = [str(p) for p in prompts]
        if not prompts:
            raise KlvizError("No prompts to train on: give at least one prompt.")
        ids = [self.tokenizer(p).input_ids for p in prompts]  # the tokenizer's own BOS convention
        for i, row in enumerate(ids):
            if not row:
                raise KlvizError(f"Prompt {i} ({prompts[i]!r}) encodes to no tokens: PPO needs at least one "
                                 "prompt token to condition on.")
        limit = _max_positions(self.policy)
        longest = max(len(r) for r in ids)
        if limit and longest + self.cfg.max_new_tokens > limit:
            raise KlvizError(f"The longest prompt has {longest} tokens; with max_new_tokens "
                             f"{self.cfg.max_new_tokens} that exceeds the model's {limit} positions: "
                             "shorten the prompts or lower max_new_tokens.")
        return prompts, ids

    def _next_prompt_indices(self) -> list[int]:
        """batch_size prompt indices: a seeded shuffle, reshuffled each time it runs out (cycling)."""
        out: list[int] = []
        while len(out) < self.cfg.batch_size:
            if not self._order:
                self._order = torch.randperm(len(self._prompts), generator=self._order_gen).tolist()
            out.append(self._order.pop())
        return out

    def rollout(self) -> Rollout:
        """Sample one batch of responses from the current policy (no update)."""
        idx = self._next_prompt_indices()
        query, query_mask = left_pad([self._prompt_ids[i] for i in idx], self.pad_id, self.device)
        response, mask, logprobs, values = sample(
            self.policy, self.value_head, query, query_mask, max_new_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature, eos_ids=self.eos_ids, pad_id=self.pad_id,
            generator=self._sample_gen)
        texts = self.tokenizer.batch_decode(
            [row[m.bool()].tolist() for row, m in zip(response.cpu(), mask.cpu())], skip_special_tokens=True)
        return Rollout([self._prompts[i] for i in idx], texts, query, query_mask, response, mask,
                       logprobs, values)

    @torch.no_grad()
    def ref_logprobs(self, roll: Rollout) -> torch.Tensor:
        """Float[B, T, V]: log ref(.|c_t) of logits / temperature at every response position.

        Positions after a response's EOS (masked everywhere) hold the uniform distribution.
        """
        B, T, V = roll.logprobs.shape
        out = torch.full((B, T, V), -math.log(V), device=self.device)
        with reference_mode(self.lora):  # LoRA: the base weights, adapter off; else the frozen SFT model
            for c in length_chunks(roll.query_mask, roll.mask, torch.arange(B, device=self.device)):
                logits, _ = response_forward(self.ref, roll.query[c.rows, c.p0:], roll.query_mask[c.rows, c.p0:],
                                             roll.response[c.rows, :c.t])  # (b, t, V)
                out[c.rows, :c.t] = torch.log_softmax(scale_logits(logits.float(), self.cfg.temperature), dim=-1)
        return out

    def _scores(self, roll: Rollout) -> torch.Tensor:
        scores = torch.as_tensor(self.reward(roll.prompts, roll.texts), dtype=torch.float32).reshape(-1)
        if scores.numel() != len(roll.texts) or not torch.isfinite(scores).all():
            raise KlvizError(f"Reward {self.cfg.reward!r} gave {scores.numel()} scores for {len(roll.texts)} "
                             "responses, or a non-finite one: it must return one finite number per response.")
        return scores.to(self.device)

    @torch.no_grad()
    def _kl_metrics(self, roll: Rollout, ref_logprobs: torch.Tensor, with_bands: bool) -> dict:
        """Per-response sums over tokens of each KL term, batch means; entropy per token; bands if asked.

        Only the n response tokens are summed over (masked positions never enter). The exact terms
        come from rows already computed (the rollout's and the reference's), so they cost no model
        pass: kl_exact, or on band steps the engine's token_stats, which gives both KLs with the bands.
        """
        sel, B = roll.mask.bool(), roll.mask.shape[0]
        logprobs, ref_rows = roll.logprobs[sel], ref_logprobs[sel]  # (n, V) each
        tokens = roll.response[sel]  # (n,)
        logp, ref_logp = gather_tokens(logprobs, tokens), gather_tokens(ref_rows, tokens)  # (n,)
        out: dict = {k: float(kl_estimate(logp, ref_logp, k).sum()) / B for k in ("k1", "k2", "k3")}
        cfg, exact = self.cfg, None
        if with_bands:
            stats = token_stats(logprobs, ref_rows, tokens, top_k=1)
            out.update({name: stats[name].sum(0).tolist() for name in BAND_COLUMNS})
            exact = stats["kl_reverse"], stats["kl_forward"]
        elif cfg.log_exact_kl or cfg.target_kl is not None or cfg.kl_estimator.startswith("exact"):
            exact = kl_exact(logprobs, ref_rows)
        if exact is not None:
            out["kl_reverse"], out["kl_forward"] = float(exact[0].sum()) / B, float(exact[1].sum()) / B
        out["entropy"] = float(-(logprobs.exp() * logprobs).sum(-1).mean())  # nats per response token
        return out

    @torch.no_grad()
    def _advantages(self, roll: Rollout, scores: torch.Tensor,
                    ref_logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whitened advantages and returns, Float[B, T] each."""
        penalty = None
        if self.cfg.kl_placement == "reward":
            penalty = kl_estimate(roll.logp, gather_tokens(ref_logprobs, roll.response), self.cfg.kl_estimator,
                                  logprobs=roll.logprobs, ref_logprobs=ref_logprobs)  # (B, T)
        rewards = token_rewards(scores, penalty, roll.mask, self.kl_coef)
        advantages, returns = gae(rewards, roll.values, roll.mask, self.cfg.gamma, self.cfg.lam)
        return whiten(advantages, roll.mask), returns

    def _chunk_loss(self, roll: Rollout, c: Chunk, ref_logprobs: torch.Tensor, advantages: torch.Tensor,
                    returns: torch.Tensor) -> tuple[PolicyLoss, torch.Tensor]:
        """Policy and value losses of one length chunk (klviz.ppo.rollout.length_chunks)."""
        cfg, rows, t = self.cfg, c.rows, c.t
        logits, hidden = response_forward(self.policy, roll.query[rows, c.p0:], roll.query_mask[rows, c.p0:],
                                          roll.response[rows, :t], with_hidden=True)
        logprobs = torch.log_softmax(scale_logits(logits.float(), cfg.temperature), dim=-1)  # (b, t, V)
        tokens, mask = roll.response[rows, :t], roll.mask[rows, :t]
        logp = gather_tokens(logprobs, tokens)  # (b, t)
        kl = None
        if cfg.kl_placement == "loss":
            ref_rows = ref_logprobs[rows, :t]
            kl = kl_estimate(logp, gather_tokens(ref_rows, tokens), cfg.kl_estimator,
                             logprobs=logprobs, ref_logprobs=ref_rows)
        pol = policy_loss_terms(logp, roll.logp[rows, :t], advantages[rows, :t], mask, cfg.cliprange, kl,
                                self.kl_coef)
        vpred = self.value_head(hidden.float()).squeeze(-1)  # (b, t)
        vf_loss, _ = value_loss(vpred, roll.values[rows, :t], returns[rows, :t], mask, cfg.cliprange_value)
        return pol, vf_loss

    def _update(self, roll: Rollout, ref_logprobs: torch.Tensor, advantages: torch.Tensor,
                returns: torch.Tensor) -> dict[str, float]:
        """ppo_epochs x minibatches of AdamW steps on the rollout; means of what they logged.

        Each minibatch's gradient is accumulated over its length chunks, each weighted by its share
        of the minibatch's tokens, so the step equals one on the token mean over the whole minibatch.
        """
        cfg, sums, n = self.cfg, dict.fromkeys(("policy_loss", "value_loss", "clipfrac", "approxkl"), 0.0), 0
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for _ in range(cfg.ppo_epochs):
            if n and cfg.max_approxkl is not None and sums["approxkl"] / n > cfg.max_approxkl:
                break  # the update already went too far: no more epochs on this rollout (cleanrl's target_kl)
            perm = torch.randperm(roll.response.shape[0], generator=self._order_gen).to(self.device)
            for idx in perm.tensor_split(cfg.minibatches):
                self.optimizer.zero_grad(set_to_none=True)
                n_tokens = roll.mask[idx].sum()
                for c in length_chunks(roll.query_mask, roll.mask, idx):
                    pol, vf_loss = self._chunk_loss(roll, c, ref_logprobs, advantages, returns)
                    share = roll.mask[c.rows].sum() / n_tokens  # this chunk's share of the token mean
                    ((pol.loss + cfg.vf_coef * vf_loss) * share).backward()
                    for key, value in (("policy_loss", pol.loss), ("value_loss", vf_loss),
                                       ("clipfrac", pol.clipfrac), ("approxkl", pol.approxkl)):
                        sums[key] += float(value.detach() * share)
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm, foreach=True)
                self.optimizer.step()
                n += 1
        return {k: v / n for k, v in sums.items()}

    def step(self) -> dict:
        """One PPO iteration; returns its metrics (and the bands on band steps)."""
        start = time.perf_counter()
        self.step_count += 1
        roll = self.last_rollout = self.rollout()
        scores = self._scores(roll)
        ref_logprobs = self.ref_logprobs(roll)
        every = self.cfg.bands_every
        with_bands = bool(every) and (self.step_count - 1) % every == 0  # steps 1, 1 + every, ...
        metrics = {"step": self.step_count, "reward_mean": float(scores.mean()),
                   "reward_std": float(scores.std()) if scores.numel() > 1 else 0.0,
                   **self._kl_metrics(roll, ref_logprobs, with_bands), "kl_coef": self.kl_coef}
        advantages, returns = self._advantages(roll, scores, ref_logprobs)
        metrics.update(self._update(roll, ref_logprobs, advantages, returns))
        self._watch_approxkl(metrics["approxkl"])
        metrics["response_len"] = float(roll.mask.sum(1).mean())
        if self.kl_ctl is not None:
            measured = metrics["kl_forward" if self.cfg.kl_estimator == "exact-forward" else "kl_reverse"]
            self.kl_coef = self.kl_ctl.update(measured, self.cfg.batch_size)
        metrics["step_time_s"] = time.perf_counter() - start
        return metrics

    def _watch_approxkl(self, approxkl: float) -> None:
        """Stop with a sentence when an update moved the policy far from the one that sampled, in the
        first cfg.approxkl_watch_steps steps (or by a NaN at any step).

        approx-KL (k3 of pi_old -> pi) stays near 0.01 in healthy PPO ("The 37 implementation
        details of PPO" #12 log it for this); 3e-4 on SmolLM2-135M gave 5.8 in one step.
        """
        limit = self.cfg.max_approxkl
        if limit is None or approxkl <= limit or (self.step_count > self.cfg.approxkl_watch_steps
                                                   and math.isfinite(approxkl)):
            return  # later steps cut their epochs instead (_update); a NaN or inf stops at any step
        raise KlvizError(f"PPO step {self.step_count} moved the policy too far from the one that sampled "
                         f"(approx-KL {approxkl:.3g} > {limit:g} nats per token, learning rate {self.lr:.2g}): "
                         "the update blew up; lower the learning rate (--lr).")

    def save(self, path: str | Path) -> Path:
        """Write the policy (no value head) and tokenizer as an HF safetensors folder, atomically."""
        with atomic_folder(path, shown=str(path)) as tmp:
            plain = merged_copy(self.lora) if self.lora is not None else self.policy  # LoRA: base + adapter
            plain.save_pretrained(str(tmp))  # safetensors in transformers v5
            self.tokenizer.save_pretrained(str(tmp))
        return Path(path)
