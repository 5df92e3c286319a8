"""Token-id plumbing shared by `klviz.sampling` (model.generate) and the mini PPO's own sampling loop."""

from __future__ import annotations

import torch


def left_pad(id_lists: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts (decoder-only generation continues from the right edge): Long[B, P] ids, mask."""
    P = max(len(ids) for ids in id_lists)
    ids = torch.full((len(id_lists), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(id_lists), P), dtype=torch.long)
    for b, row in enumerate(id_lists):
        ids[b, P - len(row):] = torch.tensor(row, dtype=torch.long)  # the last column is the newest token
        mask[b, P - len(row):] = 1
    return ids.to(device), mask.to(device)


def eos_ids(model, tokenizer) -> list[int]:
    """The ids that end a response: the tokenizer's EOS and the model's generation_config EOS id(s),
    sorted; empty when neither names one (the caller decides what that means)."""
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
    ids.discard(None)
    return sorted(ids)
