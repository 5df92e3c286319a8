"""Tiny random checkpoints built in the test, never downloaded.

    tok = make_tokenizer(tmp_path / "tok")        # byte-level BPE, BOS/EOS/PAD, a chat template
    model = make_tiny_model("llama", len(tok), seed=0)
    policy_dir, sft_dir = save_pair(tmp_path, kind="llama")

The tokenizer is built by hand (no training, so it is the same on every run): the 256 byte symbols
of GPT-2's byte-level alphabet, a few merges for the words in WORDS, and three special tokens. The
models have a few thousand to a few tens of thousands of parameters, so a test loads, samples and
scores them in well under a second. `write_gguf_llama` writes a float32 GGUF of a tiny Llama the
way llama.cpp's converter lays it out, so GGUF loading can be tested without llama.cpp.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from klviz.threads import torch_threads  # noqa: F401  (re-exported: the tests import it from here)

BOS, EOS, PAD = "<s>", "<|endoftext|>", "<pad>"  # EOS as GPT-2 spells it, the default a GGUF tokenizer assumes
SPECIALS = (BOS, EOS, PAD)  # ids 0, 1, 2
WORDS = ("the", "food", "was", "good", "bad", "very", "room", "and", "staff", "not")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=32, max_position_embeddings=128)


def _byte_alphabet() -> list[str]:
    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Specials, then the byte alphabet, then each word merged left to right, then with its leading space."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in _byte_alphabet():
        vocab[ch] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        for end in range(2, len(word) + 1):
            if word[:end] not in vocab:
                merges.append((word[:end - 1], word[end - 1]))
                vocab[word[:end]] = len(vocab)
        merges.append(("\u0120", word))  # \u0120 is the byte-level spelling of a leading space
        vocab["\u0120" + word] = len(vocab)
    return vocab, merges


def make_tokenizer(path: str | Path | None = None, *, chat_template: str | None = CHAT_TEMPLATE,
                   extra_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE tokenizer that adds BOS; saved to `path` when given.

    `extra_tokens` appends plain tokens to the vocabulary (to make a tokenizer that differs).
    """
    vocab, merges = _vocab_and_merges()
    for tok in extra_tokens:
        vocab[tok] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    if chat_template is not None:
        tok.chat_template = chat_template
    if path is not None:
        tok.save_pretrained(str(path))
    return tok


def tiny_config(kind: str, vocab_size: int, tok: PreTrainedTokenizerFast | None = None):
    """A config of a few thousand parameters for "gpt2", "llama" or "qwen2"."""
    ids = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2) if tok is None else dict(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=128, **ids)
    if kind == "llama":
        return LlamaConfig(vocab_size=vocab_size, **SMALL, **ids)
    if kind == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, **SMALL, **ids)
    raise ValueError(f"unknown tiny model kind {kind!r}")


def make_tiny_model(kind: str = "llama", vocab_size: int | None = None, seed: int = 0, **config_overrides):
    """A random causal LM in eval mode; `vocab_size` defaults to the tiny tokenizer's size."""
    vocab_size = vocab_size if vocab_size is not None else len(make_tokenizer())
    config = tiny_config(kind, vocab_size)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def perturbed(model, scale: float = 0.3, seed: int = 1):
    """A copy of `model` with Gaussian noise added to every weight: a "policy" that drifted."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return out


def save_model(model, path: str | Path, tok: PreTrainedTokenizerFast | None = None, **save_kwargs) -> Path:
    """save_pretrained the model and (by default) the tiny tokenizer into one folder."""
    path = Path(path)
    model.save_pretrained(str(path), **save_kwargs)
    (tok if tok is not None else make_tokenizer()).save_pretrained(str(path))
    return path


def save_pair(root: str | Path, kind: str = "llama", seed: int = 0, scale: float = 0.3) -> tuple[Path, Path]:
    """Write root/policy and root/sft: an SFT model and a perturbed copy, same tokenizer."""
    root = Path(root)
    tok = make_tokenizer()
    sft = make_tiny_model(kind, len(tok), seed=seed)
    policy = perturbed(sft, scale=scale, seed=seed + 1)
    return save_model(policy, root / "policy", tok), save_model(sft, root / "sft", tok)


def _llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute` of q/k rows (transformers undoes it on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf_llama(model, tok: PreTrainedTokenizerFast, path: str | Path) -> Path:
    """Write a tiny Llama and its byte-level tokenizer as a float32 GGUF, in llama.cpp's layout."""
    import gguf

    cfg, sd = model.config, {k: v.detach().float() for k, v in model.state_dict().items()}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_vocab_size(cfg.vocab_size)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])  # 3: control, 1: normal
    w.add_token_merges([" ".join(m) for m in _vocab_and_merges()[1]])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(True)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].numpy())
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                t = _llama_cpp_permute(t, cfg.num_attention_heads)
            elif gg == "attn_k":
                t = _llama_cpp_permute(t, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", t.contiguous().numpy())
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].numpy())
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"].numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
