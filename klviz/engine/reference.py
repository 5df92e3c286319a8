"""Score many policies against one SFT model, running the SFT decoder once.

    ref = reference_side(sft, inputs, batch_size=8)          # SFT decoder, once
    for policy in checkpoints:
        order, cols = score_tensors_against(policy, ref, inputs, top_k=10)

The SFT side keeps, per batch, only the hidden states at response positions, Float[N, H] (what
score_tensors keeps for one batch anyway), and reapplies its output head to each chunk; [N, V] logits
are never stored. Batches are the ones score_tensors forms (same length-sorted order, same batch
size), so each policy's columns are the very numbers `score` computes for that pair.
An SFT model whose head cannot be split (klviz/engine/heads.py) keeps nothing and reruns per policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from klviz.engine.divergence import (Heads, ScoreInput, _input_device, _pad_batch, _response_hidden, _validate,
                                     batch_columns, batch_order, heads_on_cpu)
from klviz.engine.heads import SPLIT_HEAD_TYPES, split_model
from klviz.errors import KlvizError


def _splits(model) -> bool:
    return getattr(model.config, "model_type", None) in SPLIT_HEAD_TYPES and hasattr(model, "get_decoder")


@dataclass
class Reference:
    """The SFT side of a scoring, computed once and reused against every policy."""

    sft: object
    """The SFT model (its head is reapplied per chunk)."""
    order: list[int]
    """Input indices in the order their rows come out."""
    batches: list[list[int]]
    """Input indices per batch."""
    hidden: list[torch.Tensor] | None
    """Per batch, Float[N_b, H] SFT hidden states at the response positions; None when the head cannot
    be split (the decoder then reruns per policy)."""
    vocab_size: int
    """The SFT model's output vocabulary."""


@torch.no_grad()
def reference_side(sft, inputs: list[ScoreInput], *, batch_size: int = 8, progress: bool = False) -> Reference:
    """Run the SFT decoder over every batch once; keep the response positions' hidden states."""
    vocab_size = sft.get_output_embeddings().weight.shape[0]
    _validate(inputs, vocab_size)
    order, batches = batch_order(inputs, batch_size)
    if not _splits(sft):
        return Reference(sft, order, batches, None, vocab_size)
    run, _ = split_model(sft)
    hidden = []
    for idx in tqdm(batches, desc="SFT side", unit="batch", disable=not progress):
        batch = [inputs[i] for i in idx]
        ids, mask = _pad_batch(batch, 0, _input_device(sft))
        hidden.append(_response_hidden(run, ids, mask, batch))  # (N_b, H)
    return Reference(sft, order, batches, hidden, vocab_size)


@torch.no_grad()
def score_tensors_against(policy, ref: Reference, inputs: list[ScoreInput], *, top_k: int = 10,
                          progress: bool = False, desc: str = "scoring") -> tuple[list[int], dict[str, np.ndarray]]:
    """score_tensors(policy, ref.sft, inputs) with the SFT side taken from `ref`. Returns (order, columns)."""
    vocab_size = policy.get_output_embeddings().weight.shape[0]
    if vocab_size != ref.vocab_size:
        raise KlvizError(f"The policy has {vocab_size} output logits and the SFT model {ref.vocab_size}: "
                         "they must share one vocabulary.")
    pol_run, pol_head = split_model(policy)
    sft_run, sft_head = split_model(ref.sft)
    heads = Heads(pol_head, sft_head, vocab_size, heads_on_cpu(policy, ref.sft))
    pieces: dict[str, list[np.ndarray]] = {}
    for b, idx in enumerate(tqdm(ref.batches, desc=desc, unit="batch", disable=not progress)):
        batch = [inputs[i] for i in idx]
        ids, mask = _pad_batch(batch, 0, _input_device(policy))
        h_pol = _response_hidden(pol_run, ids, mask, batch)  # (N, H)
        if ref.hidden is not None:
            h_sft = ref.hidden[b]
        else:
            h_sft = _response_hidden(sft_run, ids.to(_input_device(ref.sft)), mask.to(_input_device(ref.sft)), batch)
        batch_columns(heads, h_pol, h_sft, batch, top_k, pieces)
        del h_pol, h_sft
        heads.trim()
    return ref.order, {name: np.concatenate(parts) for name, parts in pieces.items()}
