"""Split a causal LM into "decoder to hidden states" and "output head", so the head runs on chunks.

The engine applies the head only to response positions, a chunk at a time. That is only right if
the head plus whatever the architecture does to logits afterwards (Gemma-2's soft-capping, say) is
reproduced exactly; tests/integration/test_heads.py checks each architecture listed here against
`model(...).logits`. Anything not listed falls back to the model's own forward, one model at a time.
"""

from __future__ import annotations

from typing import Callable

import torch

# model_type -> how logits are transformed after the output head (None: not at all).
_SOFTCAP = "final_logit_softcapping"
SPLIT_HEAD_TYPES: dict[str, str | None] = {
    "gpt2": None,
    "llama": None,
    "mistral": None,
    "qwen2": None,
    "qwen3": None,
    "gemma2": _SOFTCAP,
}

Run = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Head = Callable[[torch.Tensor], torch.Tensor]


def _softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    # Gemma 2: logits <- cap * tanh(logits / cap), as in its modeling code.
    return logits if not cap else torch.tanh(logits / cap) * cap


def split_model(model) -> tuple[Run, Head]:
    """Return (run, head): run(ids, mask) -> Float[B, T, H]; head(h) -> Float[n, V] logits.

    For an architecture whose head can't be split safely, run returns the full logits
    Float[B, T, V] of this one model and head is the identity.
    """
    model_type = getattr(model.config, "model_type", None)
    if model_type in SPLIT_HEAD_TYPES and hasattr(model, "get_decoder"):
        decoder, lm_head = model.get_decoder(), model.get_output_embeddings()
        cap = getattr(model.config, _SOFTCAP, None) if SPLIT_HEAD_TYPES[model_type] == _SOFTCAP else None

        def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

        def head(h: torch.Tensor) -> torch.Tensor:
            return _softcap(lm_head(h), cap)

        return run, head

    def run_full(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    return run_full, lambda logits: logits
