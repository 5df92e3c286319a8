"""Sample from either model and score what was sampled (prompts: klviz.prompts).

Prompt tokenization follows `klviz score`: a text prompt is encoded with the tokenizer's special
tokens (e.g. BOS) and the response without, its ids appended to the prompt's. A chat prompt
(`messages`) is rendered with the tokenizer's chat template (add_generation_prompt=True) and encoded
without adding special tokens, since the template writes its own (as apply_chat_template does).

Sampling is `model.generate` (batched, KV cache, left padding) with every sampling knob set
explicitly, so a checkpoint's generation_config.json cannot change the distribution sampled from.
Each batch reseeds torch from (seed, source, batch index), so the same settings give the same
responses, and "policy" responses are the same whether or not the SFT model also samples.
"""

from __future__ import annotations

import hashlib
import sys
import warnings

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from klviz.engine.divergence import ScoreInput, score
from klviz.errors import KlvizError
from klviz.prompts import Prompt
from klviz.settings import TOP_K, SamplingConfig, SamplingSettings
from klviz.tokens import eos_ids, left_pad

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")
# Settings a checkpoint's generation_config.json could add on top of ours; generate applies them
# and klviz cannot switch them off without mutating the (shared) model, so it says so.
FORCING_KEYS = ("forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "suppress_tokens",
                "begin_suppress_tokens", "sequence_bias")


def context_length(*models) -> int | None:
    """The smallest context any of `models` declares, or None when none does."""
    found = [int(v) for m in models for v in [next((getattr(m.config, k) for k in CONTEXT_KEYS
                                                    if isinstance(getattr(m.config, k, None), int)), None)]
             if v is not None]
    return min(found) if found else None


def _batch_seed(seed: int, source: str, batch: int) -> int:
    """A 63-bit seed per (seed, source, batch), independent of the other sources and batches."""
    digest = hashlib.sha256(f"klviz-sample/{seed}/{source}/{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generation_config(cfg: SamplingConfig, eos: list[int], pad: int) -> GenerationConfig:
    """Every knob explicit, neutral where klviz has no setting (generate fills None from the model)."""
    common = dict(max_new_tokens=cfg.max_new_tokens, min_new_tokens=0, repetition_penalty=1.0,
                  no_repeat_ngram_size=0, num_beams=1, num_return_sequences=1, eos_token_id=eos or None,
                  pad_token_id=pad, use_cache=True, renormalize_logits=False)
    if cfg.temperature == 0:
        return GenerationConfig(do_sample=False, **common)
    return GenerationConfig(do_sample=True, temperature=float(cfg.temperature), top_p=float(cfg.top_p),
                            top_k=cfg.top_k, min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, **common)


@torch.no_grad()
def _generate(model, prompts: list[list[int]], gen: GenerationConfig, seed: int, pad: int, eos: list[int]):
    """Left-pad `prompts` (Long[B, T]), generate, and cut each response at its first EOS."""
    device = model.get_input_embeddings().weight.device
    ids, mask = left_pad(prompts, pad, device)
    T = ids.shape[1]
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # reseed without disturbing the caller's RNG state
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
    responses = []
    for row in out[:, T:].tolist():  # (B, new tokens); after EOS generate writes pad
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        responses.append(row[:cut])
    return responses


def prompt_ids(pair, prompts: list[Prompt], cfg: SamplingConfig) -> list[list[int]]:
    """Token ids of each prompt, truncated from the left (with a warning) to fit the context of both
    `pair.policy` and `pair.sft` (any object with policy, sft and tokenizer attributes)."""
    ctx = context_length(pair.policy, pair.sft)
    budget = None if ctx is None else ctx - cfg.max_new_tokens
    if budget is not None and budget < 1:
        raise KlvizError(f"max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt in the models' "
                         f"{ctx}-token context: lower --max-new-tokens.")
    out = []
    for p in prompts:
        ids = p.token_ids(pair.tokenizer)
        if not ids:
            raise KlvizError(f"{p.origin or p.id}: the prompt encodes to no tokens.")
        if budget is not None and len(ids) > budget:
            warnings.warn(f"{p.origin or p.id}: the prompt has {len(ids)} tokens, more than the {budget} that fit "
                          f"before {cfg.max_new_tokens} new tokens in a {ctx}-token context; "
                          f"keeping its last {budget}.", stacklevel=2)
            ids = ids[-budget:]
        out.append(ids)
    return out


def sample(pair, prompts: list[Prompt], cfg: SamplingConfig, progress: bool = True) -> list[ScoreInput]:
    """cfg.samples_per_prompt responses per prompt from the chosen model(s), as ScoreInputs.

    Each has extra={"source": "policy"|"sft"}; `prompt_ids` are what the model saw (after any
    truncation); `response_ids` stop before the first EOS (possibly empty).
    """
    if not prompts:
        raise KlvizError("There are no prompts to sample from.")
    ids = prompt_ids(pair, prompts, cfg)
    jobs = [(i, s) for i in range(len(prompts)) for s in range(cfg.samples_per_prompt)]
    out: list[ScoreInput] = []
    for source in (("policy", "sft") if cfg.sample_from == "both" else (cfg.sample_from,)):
        warn_forcing(pair, source)
        with tqdm(total=len(jobs), desc=f"sampling ({source})", unit="response", file=sys.stderr,
                  disable=not progress) as bar:
            for b, start in enumerate(range(0, len(jobs), cfg.batch_size)):
                batch = jobs[start:start + cfg.batch_size]
                responses = sample_batch(pair, source, b, [ids[i] for i, _ in batch], cfg)
                out += [ScoreInput(prompt_ids=list(ids[i]), response_ids=r, prompt_id=prompts[i].id, sample_id=s,
                                   extra={"source": source}) for (i, s), r in zip(batch, responses)]
                bar.update(len(batch))
    return out


def sample_batch(pair, source: str, batch_index: int, ids: list[list[int]], cfg: SamplingConfig) -> list[list[int]]:
    """Generate batch `batch_index` of `sample` for `source` ("policy" or "sft"): one response per
    prompt in `ids` (prompt_ids' token ids), each cut before its first EOS.

    Reseeded from (cfg.seed, source, batch_index), so whoever runs this batch (this process, or a Ray
    actor: klviz/distributed.py) draws the very responses `sample` draws.
    """
    model = pair.policy if source == "policy" else pair.sft
    pad = pair.tokenizer.pad_token_id if pair.tokenizer.pad_token_id is not None else 0
    eos = eos_ids(model, pair.tokenizer)
    return _generate(model, ids, _generation_config(cfg, eos, pad), _batch_seed(cfg.seed, source, batch_index),
                     pad, set(eos))


def warn_forcing(pair, source: str) -> None:
    """Warn when the `source` model's generation_config adds settings (FORCING_KEYS) generate applies."""
    model = pair.policy if source == "policy" else pair.sft
    found = [k for k in FORCING_KEYS if getattr(model.generation_config, k, None) not in (None, [], {})]
    if found:
        warnings.warn(f"The {source} model's generation_config sets {', '.join(found)}, which generate applies: "
                      "responses are not drawn from the model's plain distribution.", stacklevel=3)


def analyze(pair, prompts: list[Prompt], cfg: SamplingConfig, top_k: int = 10,
            progress: bool = True) -> pd.DataFrame:
    """Sample responses, then score them: the token table plus a `source` column ("policy"/"sft")."""
    inputs = [x for x in sample(pair, prompts, cfg, progress=progress) if x.response_ids]
    if not inputs:
        raise KlvizError("Every sampled response was empty (the model ended each one at once), so there is "
                         "nothing to score: try other prompts or a higher temperature.")
    return score(pair.policy, pair.sft, pair.tokenizer, inputs, top_k=top_k, batch_size=cfg.batch_size,
                 progress=progress)


def settings_table(pair, prompts: list[Prompt], settings: SamplingSettings, progress: bool = False) -> pd.DataFrame:
    """The token table the dashboard shows for `settings` (any of them, the default view's included):
    sampled and scored by `analyze` in the dashboard's batches, with its top-k (tqdm bars on stderr with
    `progress`: the dashboard's worker reads them, klviz.analysis_job)."""
    return analyze(pair, prompts, settings.config(), top_k=TOP_K, progress=progress)
