"""The divergence engine: per-token log-ratios, exact KL in both directions, and where mass moved.

For response token y_t with context c_t, p = pi_policy(.|c_t) and q = pi_SFT(.|c_t) over the full
output vocabulary V:

    kl_reverse = KL(policy || SFT) = sum_v p(v) log(p(v)/q(v))   (InstructGPT's penalty)
    kl_forward = KL(SFT || policy) = sum_v q(v) log(q(v)/p(v))

Both are computed exactly, by summing over every vocabulary entry, never estimated. The per-token
estimators k1, k2, k3 of KL(policy || SFT) (Schulman, "Approximating KL Divergence") are reported
beside them. Every column is checked in tests/ against a float64 brute force.

How: each model runs its decoder to hidden states; only the response positions' hidden states are
kept; the output head is applied to chunks of those positions, upcast to float32, and every column
is derived from the two log-softmax chunks together (`token_stats`). So [batch, seq, vocab] logits
are never materialized for both models at once.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from klviz.engine.columns import (BAND_COLUMNS, BAND_EDGES, N_BANDS, RANK_COLUMNS, SCALAR_COLUMNS, TOP_COLUMNS,
                                  token_columns)
from klviz.errors import KlvizError
from klviz.engine.fused_cpu import HAVE_NUMBA, fused_token_stats
from klviz.engine.heads import split_model

# Elements of one [positions, vocab] float32 chunk (32 MiB): bounds each model's logits buffer whatever
# the batch, length or vocabulary, yet large enough for a fast head matmul (bench/RESULTS.md).
CHUNK_ELEMENTS = 2**23


def _p_log_ratio(a: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """a * (log a - log b) elementwise, with 0 where a == 0 (the limit of x log x)."""
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a))


def kl_exact(logp: torch.Tensor, logq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact KL in both directions for each row of two log-softmax tensors. Differentiable.

    logp, logq: Float[n, V], log p and log q over the whole vocabulary.
    Returns (kl_reverse, kl_forward), each Float[n]:
      kl_reverse = sum_v p log(p/q) = KL(p || q);  kl_forward = sum_v q log(q/p) = KL(q || p).
    """
    p, q = logp.exp(), logq.exp()
    return _p_log_ratio(p, logp, logq).sum(-1), _p_log_ratio(q, logq, logp).sum(-1)


def _by_band(band: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sum `values` Float[n, V] into SFT-probability bands given by `band` Long[n, V] -> Float[n, 7]."""
    out = torch.zeros(values.shape[0], N_BANDS, dtype=values.dtype, device=values.device)
    return out.scatter_add_(1, band, values)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a[i, v] * b[i, v] per row, without a [n, V] temporary."""
    return torch.bmm(a[:, None, :], b[:, :, None])[:, 0, 0]


def token_stats(logp: torch.Tensor, logq: torch.Tensor, token_ids: torch.Tensor,
                top_k: int = 10) -> dict[str, torch.Tensor]:
    """Every per-token column of the token table from two log-softmax rows per position.

    logp: Float[n, V] log pi_policy(.|c_t); logq: Float[n, V] log pi_SFT(.|c_t); token_ids: Long[n] y_t.
    Returns tensors of shape [n] (scalars), [n, 7] (bands) or [n, k] (top-k), k = min(top_k, V).
    On the CPU this runs fused (klviz/engine/fused_cpu.py: a few vectorised sweeps over V per position);
    elsewhere vectorised in torch, where each [n, V] pass is counted: sums come from the band sums
    or row dot products rather than from more [n, V] temporaries.
    """
    if _fused_ok(logp, logq):
        return fused_token_stats(logp, logq, token_ids, top_k, BAND_EDGES)
    return token_stats_torch(logp, logq, token_ids, top_k)


def _fused_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (HAVE_NUMBA and a.device.type == "cpu" and b.device.type == "cpu"
            and not (a.requires_grad or b.requires_grad))


def token_stats_from_logits(policy_logits: torch.Tensor, sft_logits: torch.Tensor, token_ids: torch.Tensor,
                            top_k: int = 10) -> dict[str, torch.Tensor]:
    """token_stats from raw logits Float[n, V] of each model (any float dtype; math in float32+).

    On the CPU the fused sweep normalises the logits itself (in float64); elsewhere the log-softmax
    runs in torch, in float32, before the vectorised path.
    """
    sft_logits = sft_logits.to(policy_logits.device)
    if _fused_ok(policy_logits, sft_logits):
        return fused_token_stats(policy_logits, sft_logits, token_ids.cpu(), top_k, BAND_EDGES)
    logp = torch.log_softmax(policy_logits.float(), dim=-1)
    logq = torch.log_softmax(sft_logits.float(), dim=-1)
    return token_stats_torch(logp, logq, token_ids.to(logp.device), top_k)


def token_stats_torch(logp: torch.Tensor, logq: torch.Tensor, token_ids: torch.Tensor,
                      top_k: int = 10) -> dict[str, torch.Tensor]:
    """token_stats vectorised in torch: the path for GPUs (and CPUs without numba)."""
    if bool(logp.amin() == -torch.inf) or bool(logq.amin() == -torch.inf):
        # Some entry has probability exactly 0: 0 * log 0 must count as 0, not NaN.
        return _token_stats_guarded(logp, logq, token_ids, top_k)
    p, q = logp.exp(), logq.exp()
    logp_y, logq_y = _at_token(logp, logq, token_ids)
    d = logp - logq  # log p/q per entry
    rev_v = p * d  # p log(p/q): each entry's share of KL(policy || SFT)
    fwd_neg_v = q * d  # -q log(q/p): minus each entry's share of KL(SFT || policy)
    diff = p - q
    gained_v = diff.clamp(min=0)
    del d
    band = _band_index(q)
    gained_b, diff_b = _by_band(band, gained_v), _by_band(band, diff)
    lost_b = (gained_b - diff_b).clamp_(min=0)  # per band: sum max(q-p, 0) = sum max(p-q, 0) - sum (p-q)
    rev_b, fwd_b = _by_band(band, rev_v), -_by_band(band, fwd_neg_v)
    del band, diff, gained_v
    k = min(top_k, logp.shape[-1])
    gained_top = rev_v.topk(k, dim=1)
    lost_top = fwd_neg_v.topk(k, dim=1, largest=False)  # most negative -q log(q/p) = largest q log(q/p)
    cross = _rowdot(fwd_neg_v, logq)  # sum_v q log q (log p - log q), for the first-order entropy change
    return token_columns(logp_y, logq_y, (-_rowdot(p, logp), -_rowdot(q, logq)), cross,
                         _ranks(logp, logq, logp_y, logq_y), (gained_b, lost_b, rev_b, fwd_b),
                         _top(gained_top.indices, gained_top.values, p, q),
                         _top(lost_top.indices, -lost_top.values, p, q))


def _at_token(logp: torch.Tensor, logq: torch.Tensor, token_ids: torch.Tensor):
    """(log p(y_t), log q(y_t)), each Float[n], of the sampled tokens token_ids Long[n]."""
    y = token_ids[:, None]
    return logp.gather(1, y)[:, 0], logq.gather(1, y)[:, 0]


def _band_index(q: torch.Tensor) -> torch.Tensor:
    """Long[n, V]: the SFT-probability band of each entry, edge_i <= q < edge_{i+1}."""
    inner_edges = torch.tensor(BAND_EDGES[1:-1], dtype=q.dtype, device=q.device)
    return torch.bucketize(q, inner_edges, right=True)


def _ranks(logp, logq, logp_y, logq_y) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank_sft, rank_policy): 1 + the number of entries more likely than the sampled token."""
    return (logq > logq_y[:, None]).sum(1) + 1, (logp > logp_y[:, None]).sum(1) + 1


def _top(ids: torch.Tensor, contrib: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> tuple:
    """(ids, contrib, p, q) of the top-k entries ids Long[n, k]: the order of token_columns' tops."""
    return ids, contrib, p.gather(1, ids), q.gather(1, ids)


def _token_stats_guarded(logp, logq, token_ids, top_k):
    """token_stats where some probabilities are exactly 0 (logits of -inf): slower, same columns."""
    p, q = logp.exp(), logq.exp()
    logp_y, logq_y = _at_token(logp, logq, token_ids)
    rev_v, fwd_v = _p_log_ratio(p, logp, logq), _p_log_ratio(q, logq, logp)
    diff = p - q
    gained_v, lost_v = diff.clamp(min=0), (-diff).clamp(min=0)
    band = _band_index(q)
    k = min(top_k, logp.shape[-1])
    gained_top, lost_top = rev_v.topk(k, dim=1), fwd_v.topk(k, dim=1)
    zero = torch.zeros_like(logp)
    entropies = (-_p_log_ratio(p, logp, zero).sum(1), -_p_log_ratio(q, logq, zero).sum(1))
    bands = tuple(_by_band(band, v) for v in (gained_v, lost_v, rev_v, fwd_v))
    # Entries with q = 0 add nothing; where p = 0 < q the KL(SFT || policy) is infinite and the
    # first-order entropy change is NaN (inf - inf).
    cross = torch.where(q > 0, q * logq * (logp - logq), zero).sum(1)
    return token_columns(logp_y, logq_y, entropies, cross, _ranks(logp, logq, logp_y, logq_y), bands,
                         _top(gained_top.indices, gained_top.values, p, q),
                         _top(lost_top.indices, lost_top.values, p, q))


@dataclass
class ScoreInput:
    """One (prompt, response) pair to score, as token ids."""

    prompt_ids: list[int]
    """The prompt's ids, with the tokenizer's special tokens (e.g. BOS); at least one id."""
    response_ids: list[int]
    """The response's ids, appended to the prompt's; no special tokens added."""
    prompt_id: str = "0"
    """Which prompt this is (a column of the table)."""
    sample_id: int = 0
    """Which sample of that prompt (a column of the table)."""
    extra: dict = field(default_factory=dict)
    """Further per-response columns, e.g. {"source": "policy"}."""

    @property
    def length(self) -> int:
        """Prompt and response tokens: what the scoring batches are sorted by (`batch_order`)."""
        return len(self.prompt_ids) + len(self.response_ids)


def _response_hidden(run: Callable, ids: torch.Tensor, mask: torch.Tensor,
                     batch: list[ScoreInput]) -> torch.Tensor:
    """Run one model's decoder; keep only the rows that predict response tokens.

    ids, mask: Long[B, T], right-padded. Returns Float[N, H] (or [N, V] for a model whose head
    cannot be split), N = total response tokens, in batch order.
    """
    hidden = run(ids, mask)  # (B, T, H)
    rows = []
    for b, ex in enumerate(batch):
        P, R = len(ex.prompt_ids), len(ex.response_ids)
        rows.append(hidden[b, P - 1:P + R - 1])  # position P+t-1 predicts response token t
    return torch.cat(rows)


def _pad_batch(batch: list[ScoreInput], pad_id: int, device: torch.device):
    """Right-pad prompt+response ids: Long[B, T] ids and attention mask (positions start at 0)."""
    seqs = [ex.prompt_ids + ex.response_ids for ex in batch]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, :len(s)] = 1
    return ids.to(device), mask.to(device)


def length_order(lengths: list[int], batch_size: int) -> tuple[list[int], list[list[int]]]:
    """(order, batches): indices sorted by length (a stable sort), cut batch_size at a time, so that a batch
    holds similar lengths and padding costs little. The one definition of score_tensors' batches, which
    klviz.engine.reference and `--ray` (klviz.distributed) must reproduce exactly."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return order, [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def batch_order(inputs: list[ScoreInput], batch_size: int) -> tuple[list[int], list[list[int]]]:
    """length_order of the inputs' prompt + response lengths."""
    return length_order([x.length for x in inputs], batch_size)


def _validate(inputs: list[ScoreInput], vocab_size: int, start: int = 0) -> None:
    """Every input scorable; `start`: the first one's index in the whole input (the messages name it)."""
    if not inputs:
        raise KlvizError("Nothing to score: the input has no (prompt, response) pairs.")
    for i, ex in enumerate(inputs, start):
        if not ex.prompt_ids:
            raise KlvizError(f"Input {i} (prompt_id {ex.prompt_id}) has an empty prompt: "
                             "at least one prompt token is needed to predict the first response token.")
        bad = [t for t in ex.prompt_ids + ex.response_ids if not 0 <= int(t) < vocab_size]
        if bad:
            raise KlvizError(f"Input {i} (prompt_id {ex.prompt_id}) has token id {bad[0]}, "
                             f"outside the model's vocabulary of {vocab_size}.")


@functools.cache
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): nothing to trim
        return None


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim) after a batch's decoders and chunks:
    otherwise glibc's heap keeps each batch's activations and grows batch after batch (bench/RESULTS.md)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _cpu_buffers(chunk: int, vocab_size: int) -> list[torch.Tensor]:
    """Two Float32[chunk, V] buffers, each model's logits, reused by every chunk of a batch when both
    heads are on the CPU: fresh tensors per chunk grew glibc's heap (bench/RESULTS.md). Not used
    elsewhere (CUDA's allocator caches)."""
    return [torch.empty(chunk, vocab_size, dtype=torch.float32) for _ in range(2)]


def _chunk_stats(pol_head, sft_head, h_pol: torch.Tensor, h_sft: torch.Tensor, targets: torch.Tensor,
                 top_k: int, buffers: list[torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Every column for one chunk of response positions: h_pol, h_sft Float[n, H] hidden states."""
    if buffers is None:
        return token_stats_from_logits(pol_head(h_pol), sft_head(h_sft), targets, top_k)
    n = h_pol.shape[0]
    pol_out, sft_out = (b[:n] for b in buffers)
    return token_stats_from_logits(pol_head(h_pol, out=pol_out), sft_head(h_sft, out=sft_out), targets, top_k)


def _input_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


@torch.no_grad()
def score_tensors(policy, sft, inputs: list[ScoreInput], *, top_k: int = 10, batch_size: int = 8,
                  progress: bool = False) -> tuple[list[int], dict[str, np.ndarray]]:
    """Score `inputs` with both models. Returns (order, columns).

    `order` lists the input indices in the order their rows appear; columns hold one row per
    response token (numpy arrays, [N] or [N, k]).
    """
    vocab_size = policy.get_output_embeddings().weight.shape[0]
    _validate(inputs, vocab_size)
    pol_run, pol_head = split_model(policy)
    sft_run, sft_head = split_model(sft)
    pad_id = 0
    order, batches = batch_order(inputs, batch_size)
    pieces: dict[str, list[np.ndarray]] = {}
    heads = Heads(pol_head, sft_head, vocab_size, heads_on_cpu(policy, sft))
    for idx in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
        batch = [inputs[i] for i in idx]
        ids, mask = _pad_batch(batch, pad_id, _input_device(policy))
        h_pol = _response_hidden(pol_run, ids, mask, batch)  # (N, H)
        h_sft = _response_hidden(sft_run, ids.to(_input_device(sft)), mask.to(_input_device(sft)), batch)
        batch_columns(heads, h_pol, h_sft, batch, top_k, pieces)
        del h_pol, h_sft
        heads.trim()
    return order, {name: np.concatenate(parts) for name, parts in pieces.items()}


@dataclass(frozen=True)
class Heads:
    """Both models' output heads (klviz/engine/heads.py), applied chunk by chunk to response positions."""

    policy: Callable
    """The policy's head: Float[n, H] hidden states -> Float[n, V] logits (`out=` a buffer)."""
    sft: Callable
    """The SFT model's head, the same way."""
    vocab_size: int
    """V, the output vocabulary both heads share."""
    on_cpu: bool
    """Both heads on the CPU with numba: reuse two logits buffers and trim the heap around each batch."""

    @property
    def chunk(self) -> int:
        """Positions per chunk: CHUNK_ELEMENTS // V, so one chunk's logits are at most 32 MiB per model."""
        return max(1, CHUNK_ELEMENTS // self.vocab_size)

    def trim(self) -> None:
        if self.on_cpu:
            _trim_heap()


def heads_on_cpu(policy, sft) -> bool:
    return HAVE_NUMBA and all(m.get_output_embeddings().weight.device.type == "cpu" for m in (policy, sft))


def batch_columns(heads: Heads, h_pol: torch.Tensor, h_sft: torch.Tensor, batch: list[ScoreInput], top_k: int,
                  pieces: dict[str, list[np.ndarray]]) -> None:
    """Every column of one batch, chunk by chunk, appended to `pieces` (column name -> numpy parts).

    h_pol, h_sft: Float[N, H] hidden states at the batch's N response positions (_response_hidden).
    The CPU buffers are allocated after the decoders (whose freed memory goes back to the OS first)
    and freed before the next batch's: the two peaks never add up. The caller drops h_pol and h_sft
    and calls heads.trim() after.
    """
    targets = torch.tensor([t for ex in batch for t in ex.response_ids], dtype=torch.long)
    heads.trim()
    chunk = heads.chunk
    buffers = _cpu_buffers(min(chunk, targets.shape[0]), heads.vocab_size) if heads.on_cpu else None
    for s in range(0, targets.shape[0], chunk):
        stats = _chunk_stats(heads.policy, heads.sft, h_pol[s:s + chunk], h_sft[s:s + chunk],
                             targets[s:s + chunk], top_k, buffers)
        for name, value in stats.items():
            pieces.setdefault(name, []).append(value.cpu().numpy())
    del buffers


def score(policy, sft, tokenizer, inputs: list[ScoreInput], *, top_k: int = 10, batch_size: int = 8,
          progress: bool = False) -> pd.DataFrame:
    """The token table: one row per response token, every column of the README's definitions.

    Rows come in input order, positions ascending. `tokenizer` decodes each token's text.
    """
    order, cols = score_tensors(policy, sft, inputs, top_k=top_k, batch_size=batch_size, progress=progress)
    return token_frame(inputs, order, cols, tokenizer)


def token_frame(inputs: list[ScoreInput], order: list[int], cols: dict[str, np.ndarray], tokenizer) -> pd.DataFrame:
    """score_tensors' (order, columns) -> the token table, rows in input order, positions ascending."""
    lengths = [len(inputs[i].response_ids) for i in order]
    # Undo the length sort: row r of `cols` belongs to input order[...]; stable by input index.
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    by_input = {i: (st, n) for i, st, n in zip(order, starts, lengths)}
    perm = np.concatenate([np.arange(by_input[i][0], by_input[i][0] + by_input[i][1]) for i in range(len(inputs))])
    key = {"prompt_id": [], "sample_id": [], "position": [], "token_id": []}
    extra_keys = sorted({k for ex in inputs for k in ex.extra})
    extras = {k: [] for k in extra_keys}
    for ex in inputs:
        n = len(ex.response_ids)
        key["prompt_id"] += [str(ex.prompt_id)] * n
        key["sample_id"] += [int(ex.sample_id)] * n
        key["position"] += list(range(n))
        key["token_id"] += [int(t) for t in ex.response_ids]
        for k in extra_keys:
            extras[k] += [ex.extra.get(k)] * n
    vocab_text = {t: tokenizer.decode([t], clean_up_tokenization_spaces=False) for t in set(key["token_id"])}
    data = {**key, "token": [vocab_text[t] for t in key["token_id"]], **extras}
    for name in SCALAR_COLUMNS:
        data[name] = cols[name][perm].astype(np.float64)
    for name in RANK_COLUMNS:
        data[name] = cols[name][perm].astype(np.int64)
    for name in BAND_COLUMNS + TOP_COLUMNS:
        arr = cols[name][perm]
        data[name] = list(arr.astype(np.int64) if name.endswith("_ids") else arr.astype(np.float64))
    return pd.DataFrame(data)
