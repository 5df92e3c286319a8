"""Split a causal LM into "decoder to hidden states" and "output head", so the head runs on chunks.

The engine applies the head only to response positions, a chunk at a time. That is only right if
the head plus whatever the architecture does to logits afterwards (Gemma-2's soft-capping, say) is
reproduced exactly; tests/integration/test_score.py checks each architecture listed here against
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
Head = Callable[..., torch.Tensor]  # head(h, out=None) -> logits


def _softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    # Gemma 2: logits <- cap * tanh(logits / cap), as in its modeling code.
    return logits if not cap else torch.tanh(logits / cap) * cap


def split_model(model) -> tuple[Run, Head]:
    """Return (run, head): run(ids, mask) -> Float[B, T, H]; head(h, out=None) -> Float[n, V] logits.

    `out`, a Float[n, V] buffer, receives the logits when the head's weight has its dtype (the
    engine reuses one buffer per chunk on the CPU); otherwise a new tensor is returned.
    For an architecture whose head can't be split safely, run returns the full logits
    Float[B, T, V] of this one model and head is the identity.
    """
    model_type = getattr(model.config, "model_type", None)
    if model_type in SPLIT_HEAD_TYPES and hasattr(model, "get_decoder"):
        decoder, lm_head = model.get_decoder(), model.get_output_embeddings()
        cap = getattr(model.config, _SOFTCAP, None) if SPLIT_HEAD_TYPES[model_type] == _SOFTCAP else None
        plain = type(lm_head) is torch.nn.Linear  # anything else (a wrapped or quantized head) runs as is

        def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

        def head(h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            if (out is None or not plain or torch.is_grad_enabled() or lm_head.weight.dtype != out.dtype
                    or h.dtype != out.dtype):
                return _softcap(lm_head(h), cap)
            torch.matmul(h, lm_head.weight.t(), out=out)  # what nn.Linear computes, into `out`
            if lm_head.bias is not None:
                out.add_(lm_head.bias)
            return out.div_(cap).tanh_().mul_(cap) if cap else out  # the soft-cap, in place

        return run, head

    def run_full(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    return run_full, lambda logits, out=None: logits
