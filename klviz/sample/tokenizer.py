"""A byte-level BPE tokenizer trained on the review corpus, wrapped for transformers.

Byte-level BPE (GPT-2's scheme) round-trips any text exactly, and with a vocabulary a few times
larger than the grammar's word list every word of the grammar becomes one token (" clean",
" very"), so decoding a single token gives readable text in the app's token tables.
The tokenizer adds BOS in front of every encoded text (as Llama's does); EOS ends each training
review, so generation stops by itself.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
"""In id order: PAD is 0, BOS 1, EOS 2, UNK 3."""

DEFAULT_VOCAB_SIZE = 768
"""Enough for every merge the corpus offers (about 735 tokens), so each grammar word is one token."""

MAX_LENGTH = 64
"""Longest sequence the sample models see (a review is about 15-45 tokens)."""


def train_tokenizer(texts: list[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts` and wrap it with BOS/EOS/PAD/UNK. Deterministic for fixed texts."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MAX_LENGTH,
        padding_side="left",  # generation batches prompts left-padded, as decoder-only models need
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """Write the tokenizer files (tokenizer.json, tokenizer_config.json, ...) into `folder`."""
    tokenizer.save_pretrained(folder)
