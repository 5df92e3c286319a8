"""Supervised fine-tuning of the sample SFT model: a small GPT-2 trained from scratch on the corpus.

A plain torch loop (nanoGPT style): AdamW, linear warmup then cosine decay, gradient clipping,
next-token cross-entropy with padding masked out, held-out perplexity at the end.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from klviz.sample.tokenizer import MAX_LENGTH

IGNORE_INDEX = -100
"""Label value that torch's cross-entropy skips (padding)."""


@dataclass(frozen=True)
class SFTConfig:
    """Model size and optimisation of the sample SFT model."""

    n_embd: int = 128
    """Width of the residual stream."""
    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block."""
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 48
    """Reviews per step."""
    lr: float = 3e-3
    """Peak learning rate (small models take a large one)."""
    min_lr_ratio: float = 0.1
    """The cosine schedule ends at lr * min_lr_ratio."""
    warmup_steps: int = 50
    """Linear warmup from 0 to lr."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this."""
    seed: int = 0
    """Seeds weight init and batch order."""
    threads: int = 2
    """torch intra-op threads for the whole sample build (the target is a 2-core laptop)."""

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be divisible by n_head.")
        if self.warmup_steps >= self.steps:
            raise ValueError("warmup_steps must be smaller than steps.")


def build_model(tokenizer: PreTrainedTokenizerFast, cfg: SFTConfig) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 with tied embeddings, sized for the tokenizer."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=MAX_LENGTH,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg.seed)
    return GPT2LMHeadModel(config)


def encode(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[list[int]]:
    """BOS + text + EOS token ids per review (the tokenizer adds BOS itself)."""
    ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH - 1).input_ids
    return [row + [tokenizer.eos_token_id] for row in ids]


def collate(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch: input_ids (B, T), attention_mask (B, T), labels (B, T) with pads ignored."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)  # HF shifts labels: position t predicts t+1
    return input_ids, mask, labels


def lr_at(step: int, cfg: SFTConfig) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


@torch.no_grad()
def perplexity(model: GPT2LMHeadModel, rows: list[list[int]], pad_id: int, batch_size: int = 128) -> float:
    """exp(mean next-token cross-entropy) over every predicted token of `rows`, EOS included."""
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        input_ids, mask, labels = collate(rows[start : start + batch_size], pad_id)
        logits = model(input_ids=input_ids, attention_mask=mask).logits  # (B, T, V)
        logits, targets = logits[:, :-1], labels[:, 1:]  # position t predicts token t+1
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += int((targets != IGNORE_INDEX).sum())
    return math.exp(total_nll / total_tokens)


def train_sft(
    model: GPT2LMHeadModel,
    train_rows: list[list[int]],
    pad_id: int,
    cfg: SFTConfig,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Train `model` in place on `train_rows`; returns {"steps", "final_loss", "seconds"}.

    Call it inside `torch_threads(cfg.threads)` (make_sample_data does) for the intended speed.
    """
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    order: list[int] = []
    start, loss_ema = time.perf_counter(), float("nan")
    model.train()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:  # reshuffle once per epoch
            order = list(range(len(train_rows)))
            rng.shuffle(order)
        batch, order = order[: cfg.batch_size], order[cfg.batch_size :]
        input_ids, mask, labels = collate([train_rows[i] for i in batch], pad_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_ema = loss.item() if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * loss.item()
        if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
            log(f"sft step {step + 1}/{cfg.steps}  loss {loss_ema:.3f}  {time.perf_counter() - start:.0f}s")
    model.eval()
    return {"steps": cfg.steps, "final_loss": loss_ema, "seconds": time.perf_counter() - start}
