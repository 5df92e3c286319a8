"""Rollouts for the mini PPO: one batched KV-cache sampling loop that keeps everything the update needs.

While sampling, the policy's logits at each response position are exactly pi_old(.|c_t), and the
hidden state the output head sees there is the value head's input. So the loop keeps the full
log-softmax rows and the values, and the step needs no separate scoring pass of the policy: the only
other forward passes are one of the reference and the training passes. (TRL's RLOO/GRPO re-run the
policy to get old log-probs; skipping that is part of why this is faster on CPU.) The loop also
writes a preallocated (static) KV cache, runs the prompt pass once per distinct prompt, and draws
tokens by inverting the CDF; `length_chunks` trims padding from the later passes.

Shapes: B responses, P prompt positions (left-padded), T response positions, V vocabulary, H hidden.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass
from typing import Iterator

import torch

from klviz.errors import KlvizError


@dataclass
class Rollout:
    """One batch of sampled responses and what the policy said while sampling them."""

    prompts: list[str]
    """The B prompt texts, in batch order."""
    texts: list[str]
    """The B decoded responses (special tokens skipped)."""
    query: torch.Tensor
    """Long[B, P]: prompt ids, left-padded."""
    query_mask: torch.Tensor
    """Long[B, P]: 1 on prompt tokens, 0 on left padding."""
    response: torch.Tensor
    """Long[B, T]: sampled ids; the pad id after a response's EOS."""
    mask: torch.Tensor
    """Float[B, T]: 1 up to and including the first EOS, 0 after."""
    logprobs: torch.Tensor
    """Float[B, T, V]: log pi_old(.|c_t) of logits / temperature, float32."""
    values: torch.Tensor
    """Float[B, T]: value head's V(c_t) at sampling time."""

    @property
    def logp(self) -> torch.Tensor:
        """Float[B, T]: log pi_old(y_t|c_t) of the sampled tokens."""
        return gather_tokens(self.logprobs, self.response)


def gather_tokens(logprobs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Float[B, T, V] rows and Long[B, T] ids -> Float[B, T] log-probs of those ids."""
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Long[B, L]: 0 at each row's first real token, counting up; padding gets 0 (it is masked anyway)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@contextlib.contextmanager
def head_inputs(model) -> Iterator[list[torch.Tensor]]:
    """Collect the hidden states the output head receives (the value head's input) while in the block.

    A forward hook on the policy's own head, so logits stay the model's own (soft-capping and all).
    Only ever used on the trainer's private policy copy, never on a shared model.
    """
    head = model.get_output_embeddings()
    if head is None:
        raise KlvizError(f"{type(model).__name__} has no output head: PPO needs a causal language model.")
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda module, args, output: captured.append(args[0]))
    try:
        yield captured
    finally:
        handle.remove()


def fuse_activations(model) -> int:
    """Swap GPT-2's "gelu_new" modules for GELUTanh in `model`; returns how many were swapped.

    Both compute 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); transformers' NewGELUActivation
    spells it as six elementwise ops (each a pass over [B, L, 4H] and more in backward), GELUTanh as
    one fused kernel, about 3x faster forward + backward on a CPU. The outputs agree to float32
    rounding (checked in tests/integration/test_ppo.py). Only for the trainer's private policy copy.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


@functools.lru_cache(maxsize=None)
def _supports_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def _call(model, ids, attn, pos, *, keep: int, use_cache: bool, past=None):
    kwargs = dict(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=use_cache)
    if past is not None:
        kwargs["past_key_values"] = past
    if _supports_logits_to_keep(type(model)):
        kwargs["logits_to_keep"] = keep  # only the last `keep` positions go through the output head
    return model(**kwargs)


def _static_cache(model, max_len: int):
    """A preallocated KV cache (written in place; a growing cache re-copies itself every step), or None."""
    try:
        from transformers import StaticCache

        return StaticCache(config=model.config, max_cache_len=max_len)
    except Exception:  # an architecture without static-cache support: the model makes a dynamic one
        return None


def scale_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature (the same tensor when temperature is 1: no copy in the common case)."""
    return logits if temperature == 1.0 else logits / temperature


def sample_categorical(logprobs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of Float[B, V] log-probs by inverting the CDF: one uniform per row.

    torch.multinomial draws an exponential per vocabulary entry; this is the same distribution for
    a fraction of the cost. A token of probability 0 is never drawn (its CDF step is empty).
    """
    cdf = logprobs.double().exp().cumsum(-1)  # (B, V), float64 so the last entry is ~1 to 1e-15
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)


@torch.no_grad()
def sample(policy, value_head: torch.nn.Module, query: torch.Tensor, query_mask: torch.Tensor, *,
           max_new_tokens: int, temperature: float, eos_ids: list[int], pad_id: int,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample up to max_new_tokens per prompt with a KV cache; (response, mask, logprobs, values).

    Returns Long[B, T], Float[B, T], Float[B, T, V], Float[B, T] with T <= max_new_tokens (the loop
    stops once every response has emitted EOS). After EOS a row is fed the pad id, masked out.
    """
    B, P = query.shape
    eos = torch.tensor(eos_ids, device=query.device)
    # The mask grows one column per step: preallocated, sliced (no per-step torch.cat).
    full_mask = torch.cat([query_mask, torch.ones_like(query_mask[:, :1]).expand(B, max_new_tokens)], dim=1)
    # Prompts repeat within a batch (they cycle): the prompt pass runs once per distinct prompt, then
    # the cache and outputs are expanded to the batch's rows (`rows` maps each row to its prompt).
    distinct, rows = torch.unique(torch.cat([query, query_mask], 1), dim=0, return_inverse=True)
    step_ids, step_mask = distinct[:, :P], distinct[:, P:]
    step_pos, past = position_ids(step_mask), _static_cache(policy, P + max_new_tokens)
    finished = torch.zeros(B, dtype=torch.bool, device=query.device)
    tokens, alive, logprobs, values = [], [], [], []
    with head_inputs(policy) as captured:
        for t in range(max_new_tokens):
            out = _call(policy, step_ids, step_mask, step_pos, keep=1, use_cache=True, past=past)
            past = out.past_key_values
            logits = out.logits[:, -1].float()  # (B, V): the last position predicts the next token
            hidden = captured.pop()[:, -1].float()  # (B, H): the head's input at that position
            if t == 0:  # distinct prompts -> batch rows
                past.reorder_cache(rows)
                logits, hidden, step_pos = logits[rows], hidden[rows], position_ids(query_mask)
            step_logprobs = torch.log_softmax(scale_logits(logits, temperature), dim=-1)  # (B, V)
            token = sample_categorical(step_logprobs, generator)  # (B,)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            alive.append(~finished)
            tokens.append(token)
            logprobs.append(step_logprobs)
            values.append(value_head(hidden).squeeze(-1))
            finished = finished | torch.isin(token, eos)
            if bool(finished.all()):
                break
            step_ids, step_mask = token[:, None], full_mask[:, :P + t + 1]  # (B, 1), (B, P + t + 1)
            step_pos = step_pos[:, -1:] + 1
    response = torch.stack(tokens, 1)  # (B, T)
    mask = torch.stack(alive, 1).float()  # (B, T): alive at t means token t is part of the response
    return response, mask, torch.stack(logprobs, 1), torch.stack(values, 1)


ROWS_PER_CHUNK = 16
"""Rows per forward pass of the reference and training passes (`length_chunks`)."""


@dataclass
class Chunk:
    """Some rows of a batch and the columns they use: prompt columns p0.. and response columns ..t."""

    rows: torch.Tensor
    """Long[b]: row indices into the batch."""
    p0: int
    """First prompt column any of these rows uses (the columns before are left padding in all of them)."""
    t: int
    """Response columns used: the longest of these responses (columns after are past every EOS)."""


def length_chunks(query_mask: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor,
                  rows_per_chunk: int | None = None) -> list[Chunk]:
    """Split `rows` into chunks of similar response length, each trimmed to the columns it uses.

    A dense batch pads every row to the longest prompt plus the longest response; on the sample
    model a third of those positions are padding. Sorting rows by response length and dropping each
    chunk's all-padding columns skips most of that work. Exact: left padding is masked out and
    causal attention never looks right, so the kept positions' logits do not change.
    """
    rows_per_chunk = rows_per_chunk or ROWS_PER_CHUNK
    lengths = mask[rows].sum(1)  # (b,)
    order = rows[torch.argsort(lengths, stable=True)]
    chunks = []
    for part in order.tensor_split(max(1, round(len(rows) / rows_per_chunk))):
        used = query_mask[part].sum(0) > 0  # (P,) prompt columns some row of the chunk uses
        p0 = int(used.nonzero()[0]) if bool(used.any()) else 0
        chunks.append(Chunk(part, p0, int(mask[part].sum(1).max())))
    return chunks


def response_forward(model, query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor, *,
                     with_hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One full-sequence forward; logits (and head inputs) at the positions predicting the response.

    query, query_mask: Long[B, P] left-padded; response: Long[B, T]. Returns (Float[B, T, V] raw
    logits in the model's dtype, Float[B, T, H] or None). The response is attended in full: causal
    attention means a token before EOS never sees the padding after it.
    """
    T = response.shape[1]
    ids = torch.cat([query, response], dim=1)  # (B, P + T)
    attn = torch.cat([query_mask, torch.ones_like(response)], dim=1)  # (B, P + T)
    ctx = head_inputs(model) if with_hidden else contextlib.nullcontext([])
    with ctx as captured:
        out = _call(model, ids, attn, position_ids(attn), keep=T + 1, use_cache=False)
    logits = out.logits[:, -(T + 1):-1]  # (B, T, V): position P+t-1 predicts response token t
    hidden = captured[-1][:, -(T + 1):-1] if with_hidden else None  # (B, T, H), same positions
    return logits, hidden
