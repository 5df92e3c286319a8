"""Load a policy/SFT pair safely, on the right device.

A source is a local Hugging Face folder (config.json, *.safetensors, tokenizer files), a .zip of one,
a PEFT/LoRA adapter folder (adapter_config.json, merged into its base so the result is a plain
model), or a .gguf file (transformers' GGUF support; needs the optional `gguf` package). A .gguf is
dequantized, and a .zip unpacked, once: later loads read the copy klviz.model_cache keeps, keyed by
the file's SHA-256. A model from a .gguf carries no quantizer marks (`strip_quantizer`), so it saves.

Safety, whatever the source: `trust_remote_code` is never set, so no Python code from a checkpoint
runs; `local_files_only` is always set, so nothing is downloaded; safetensors are preferred, and a
pickled .bin loads only if `torch.load(weights_only=True)` accepts it (checked before transformers
or peft touch it); a .zip's entries are all checked (`_check_zip`) before anything is written.
Memory is estimated before loading (`placement`). Every user error is a KlvizError: one sentence
naming the file.

A Pair is meaningful only if both models are causal decoders, share one tokenizer and emit the same
number of logits; `load_pair` checks all three. Nothing here keeps global state: the dashboard
caches the returned Pair and never mutates it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import struct
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError  # a damaged .safetensors file (bad header, cut short): not an OSError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from klviz import model_cache
from klviz.device import resolve_device, resolve_dtype
from klviz.checkpoints import _zip_root, check_pickle, count_params, extract_zip, placement  # noqa: F401
from klviz.errors import KlvizError
from klviz.sources import LoadInfo, _folder_kind, locate  # noqa: F401  (klviz.models.locate, as before)

PROBE_TEXT = "Hello, world! 12 + 3 = 15.\n\tcafé  naïve 東京 🙂 <|user|>"
"""Text both tokenizers must encode identically (spaces, digits, accents, CJK, emoji, markup)."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tekken.json")
"""Any one of these makes a folder's tokenizer loadable (tokenizer_config.json alone does not)."""

Log = Callable[[str], None]


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel  # eval mode, on its device(s)
    tokenizer: object       # a transformers tokenizer
    info: LoadInfo


@dataclass(frozen=True)
class Pair:
    """A policy and its SFT model, checked comparable. Shared read-only: never mutate the models."""

    policy: PreTrainedModel
    sft: PreTrainedModel
    tokenizer: object        # the SFT model's (identical to the policy's, checked)
    device: torch.device     # where inputs go (the policy's input embeddings)
    dtype: torch.dtype       # the weights' dtype; divergences are computed in float32 regardless
    policy_info: LoadInfo
    sft_info: LoadInfo


def load_model(source, *, device: str = "auto", dtype: str = "auto", base=None, role: str = "policy",
               log: Log | None = None) -> LoadedModel:
    """Load one checkpoint (folder, .zip, adapter on `base`, or .gguf) in eval mode on `device`."""
    dev = resolve_device(device)
    loaded = _load(source, role, dev, resolve_dtype(dtype, dev), [base] if base is not None else [])
    if log is not None:
        log(loaded.info.describe())
    return loaded


def load_pair(policy, sft, *, device: str = "auto", dtype: str = "auto", policy_base=None, sft_base=None,
              log: Log | None = None) -> Pair:
    """Load and check a policy/SFT pair. A policy adapter's base is `policy_base`, else the SFT checkpoint."""
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    sft_bases = [sft_base] if sft_base is not None else []
    policy_bases = [policy_base] if policy_base is not None else [sft, *sft_bases]
    for source in (policy, sft, policy_base, sft_base):  # fail on a bad path before any slow load
        if source is not None:
            locate(source)
    pol = _load(policy, "policy", dev, dt, policy_bases)
    if log is not None:
        log(pol.info.describe())
    ref = _load(sft, "sft", dev, dt, sft_bases)
    if log is not None:
        log(ref.info.describe())
    check_same_tokenizer(pol.tokenizer, ref.tokenizer, str(policy), str(sft))
    check_logit_sizes(pol, ref)
    return Pair(policy=pol.model, sft=ref.model, tokenizer=ref.tokenizer,
                device=pol.model.get_input_embeddings().weight.device, dtype=dt,
                policy_info=pol.info, sft_info=ref.info)


def _load(source, role: str, dev: torch.device, dt: torch.dtype, bases: list) -> LoadedModel:
    start = time.perf_counter()
    shown = str(source)
    kind, path = locate(source)
    if kind == "zip":
        entry = model_cache.cached(path, "zip", lambda d: extract_zip(path, d, shown),
                                   expected_bytes=_unpacked_bytes(path))
        with contextlib.ExitStack() as stack:
            if entry is None:  # caching off, or too big for it: unpack for this load only
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="klviz-zip-"))
                root = extract_zip(path, Path(tmp), shown)
            else:
                root = _zip_root(entry, shown)
            inner = _folder_kind(root, shown)
            model, tok, base, where = _load_local(inner, root, shown, role, dev, dt, bases)
        kind = f"zip ({inner})"
    else:
        model, tok, base, where = _load_local(kind, path, shown, role, dev, dt, bases)
    model.eval()
    info = LoadInfo(role=role, kind=kind, path=shown, dtype=dt, device=where,
                    n_params=sum(p.numel() for p in model.parameters()),
                    seconds=time.perf_counter() - start, base=base)
    return LoadedModel(model=model, tokenizer=tok, info=info)


def _load_local(kind, path: Path, shown, role, dev, dt, bases):
    """(model, tokenizer, base shown or None, device string) for an unpacked source."""
    if kind == "adapter":
        return _load_adapter(path, shown, role, dev, dt, bases)
    if kind == "gguf":
        _require_gguf(shown)
        entry = model_cache.cached(path, f"gguf-{str(dt).removeprefix('torch.')}",
                                   lambda d: _dequantize_gguf_into(path, shown, role, dt, d))
        if entry is not None:  # later loads read the dequantized folder: seconds, not a minute
            path, extra = entry, {"use_safetensors": True}
        else:
            # absolute: transformers looks for a bare gguf_file name in the working directory first
            extra = _gguf_kwargs(path)
        folder = path.parent if entry is None else path
    else:
        folder, extra = path, {"use_safetensors": _weights_are_safetensors(path, shown)}
    gguf_file = extra.get("gguf_file")
    config = _read_config(folder, shown, gguf_file)
    placed, where = placement(count_params(config), dt, dev, shown, role)
    model = strip_quantizer(_from_pretrained(folder, shown, role, dt, **placed, **extra), shown)
    if not placed and dev.type != "cpu":
        model = model.to(dev)
    tok = _load_tokenizer(folder, shown, gguf_file)
    return model, tok, None, where


# ---- GGUF ------------------------------------------------------------------------------------

def _gguf_kwargs(path: Path) -> dict:
    """from_pretrained arguments that unpack every GGUF weight into a plain dense model.

    Without dequantize=True, transformers keeps the weights in GGUF blocks whenever a matmul kernel
    is installed (GgufConfig's docstring, transformers 5.x), and klviz's math needs plain weights.
    """
    from transformers import GgufConfig

    gguf_file = str(path.resolve())  # absolute: a bare name is looked up in the working directory first
    return {"gguf_file": gguf_file, "quantization_config": GgufConfig(gguf_file=gguf_file, dequantize=True)}


def strip_quantizer(model: PreTrainedModel, shown: str = "the model") -> PreTrainedModel:
    """Remove the GGUF quantizer marks transformers leaves on a dequantized model, so it saves.

    Their weights are plain tensors, but save_pretrained refuses any model that still carries an
    hf_quantizer ("The model is quantized with gguf and is not serializable"). A model whose weights
    really are quantized is refused here, before any training spends time on it.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    packed = [type(m).__name__ for m in model.modules() if type(m).__module__.startswith("transformers.integrations")]
    if packed:  # e.g. GGUF blocks kept for a matmul kernel: not plain tensors
        raise KlvizError(f"{shown} holds quantized weights ({packed[0]}), which klviz can neither train nor "
                         "save: load a float checkpoint (or a .gguf, which klviz dequantizes).")
    quantizer.remove_quantization_config(model)  # transformers' own undo: hf_quantizer, config, flags
    return model


def _dequantize_gguf_into(path: Path, shown: str, role: str, dt: torch.dtype, folder: Path) -> None:
    """Dequantize the GGUF at `path` on the CPU and save it, with its tokenizer, as a safetensors folder."""
    extra = _gguf_kwargs(path)
    with _gguf_parsed_once():
        config = _read_config(path.parent, shown, extra["gguf_file"])
        placement(count_params(config), dt, torch.device("cpu"), shown, role)
        model = strip_quantizer(_from_pretrained(path.parent, shown, role, dt, **extra), shown)
        tokenizer = _load_tokenizer(path.parent, shown, extra["gguf_file"])
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within it, the `gguf` package parses each file once and builds each tensor-name map once.

    transformers reads a .gguf four times for one model (our config read, from_pretrained's config,
    its weights, the tokenizer's config: each `load_gguf_checkpoint` call makes its own
    `gguf.GGUFReader`, whose metadata parse is pure Python, ~9 s for SmolLM2's 49k-token vocabulary on
    the 2-core box, and then converts every field again), and builds `gguf.get_tensor_name_map` again
    for every submodule while mapping weight names (`get_gguf_hf_weights_map` recurses over the
    model). All are results of their arguments alone; transformers looks them up on their modules when
    called (`from gguf import GGUFReader, ...` and `from ..modeling_gguf_pytorch_utils import
    load_gguf_checkpoint` inside its functions), so memoized versions are set there for the duration
    (metadata handed out as copies) and restored after. One parse, the scores against the folder's and
    the restored functions: tests/integration/test_models.py; SmolLM2's first load, and its files
    compared with the unmemoized ones: bench/RESULTS.md."""
    import copy

    import gguf
    from transformers import modeling_gguf_pytorch_utils as hf_gguf

    real_reader, real_map, real_load = gguf.GGUFReader, gguf.get_tensor_name_map, hf_gguf.load_gguf_checkpoint
    readers: dict = {}
    metadata: dict = {}

    def reader(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = real_reader(path, mode)
        return readers[key]

    def load(path, return_tensors=False, **kwargs):
        if return_tensors or kwargs:
            return real_load(path, return_tensors=return_tensors, **kwargs)
        key = os.path.realpath(path)
        if key not in metadata:
            metadata[key] = real_load(path, return_tensors=False)
        return copy.deepcopy(metadata[key])  # the callers may change what they get

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(real_map)
    hf_gguf.load_gguf_checkpoint = load
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_map
        hf_gguf.load_gguf_checkpoint = real_load


def _unpacked_bytes(path: Path) -> int:
    """A .zip's total unpacked size (0 when unreadable: extract_zip then says why)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError):
        return 0


# ---- weights, config, tokenizer --------------------------------------------------------------

def _member(shown: str, folder: Path, path: Path) -> str:
    """A file of the checkpoint as the user knows it: their checkpoint's name, then the file's path in the model
    folder (never the server's path: an upload is unpacked into the model cache)."""
    return f"{shown}/{path.relative_to(folder).as_posix()}"


def _weights_are_safetensors(folder: Path, shown: str) -> bool:
    """True when safetensors are present; else every pickle transformers would read is checked."""
    if any(folder.glob("*.safetensors")):
        return True
    shards = [folder / "pytorch_model.bin"] if (folder / "pytorch_model.bin").is_file() else []
    index = folder / "pytorch_model.bin.index.json"
    if index.is_file():
        try:
            shards += sorted({folder / name for name in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise KlvizError(f"{_member(shown, folder, index)} is not a valid shard index (JSON with a weight_map).") from None
        inside = folder.resolve()
        for shard in shards:  # a shard named outside the checkpoint ("/etc/passwd", "../x") is never opened
            if not shard.resolve().is_relative_to(inside):
                raise KlvizError(f"{_member(shown, folder, index)} names a shard outside the checkpoint "
                                 f"({shard.name}).")
    if not shards:
        raise KlvizError(f"{shown} has no model weights (model.safetensors or pytorch_model.bin).")
    for shard in shards:
        check_pickle(shard, _member(shown, folder, shard))
    return False


def _read_config(folder: Path, shown: str, gguf_file: str | None = None):
    if gguf_file is None:
        try:
            raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise KlvizError(f"{_member(shown, folder, folder / 'config.json')} is not valid JSON ({e}).") from None
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        # With trust_remote_code=False transformers uses its own class for a known model_type and
        # ignores auto_map; an unknown one could only run through the checkpoint's code.
        if "auto_map" in raw and raw.get("model_type") not in CONFIG_MAPPING_NAMES:
            raise KlvizError(f"{shown} needs its own Python code (auto_map in config.json), "
                             "which klviz never runs: use a checkpoint of a transformers architecture.")
    try:
        config = AutoConfig.from_pretrained(str(folder), gguf_file=gguf_file, local_files_only=True,
                                            trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, ImportError, EOFError) as e:
        raise KlvizError(f"{shown}: its config could not be read ({_first_line(e)}).") from None
    except struct.error:  # transformers' GGUF reader on a cut file: a header shorter than it says
        raise KlvizError(f"{shown}: the file ends inside its header (truncated?): download or copy it again.") from None
    check_causal(config, shown)
    return config


def check_causal(config, shown: str) -> None:
    """Refuse encoder-decoders, BERT-style encoders, and anything without a causal-LM head."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    mt = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise KlvizError(f"{shown} is an encoder-decoder model ({mt}), but klviz compares causal decoder language models.")
    if mt not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise KlvizError(f"{shown} is a {mt} model, which has no causal language-model head in transformers.")
    # BERT-style encoders have a causal head only when configured as decoders (is_decoder=true).
    if mt in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        raise KlvizError(f"{shown} is an encoder ({mt} with is_decoder false), not a causal decoder language model.")


def _from_pretrained(folder: Path, shown: str, role: str, dt, **extra) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dt, local_files_only=True, trust_remote_code=False,
            weights_only=True, **extra)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, ImportError, SafetensorError) as e:
        raise KlvizError(f"{shown}: the {role} model could not be loaded ({_first_line(e)}).") from None


def _has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _load_tokenizer(folder: Path, shown: str, gguf_file: str | None = None):
    fix = "save the tokenizer files (tokenizer.json) next to the model"
    if gguf_file is None and not _has_tokenizer_files(folder):
        raise KlvizError(f"{shown} has no tokenizer files: {fix}.")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file, local_files_only=True,
                                            trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, ImportError, AttributeError, EOFError, struct.error) as e:
        raise KlvizError(f"{shown}: its tokenizer could not be loaded ({_first_line(e)}); {fix}.") from None
    if len(tok.get_vocab()) < 2:  # transformers builds an empty tokenizer rather than failing
        raise KlvizError(f"{shown}: its tokenizer has an empty vocabulary; {fix}.")
    return tok


def _require_gguf(shown: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise KlvizError(f"{shown} is a GGUF file, and reading one needs the optional gguf package: "
                         "pip install 'klviz[gguf]' (or pip install gguf).")


# ---- adapters --------------------------------------------------------------------------------

def _load_adapter(path: Path, shown: str, role: str, dev, dt, bases: list):
    """Load the base, apply the LoRA/PEFT adapter, merge it (merge_and_unload) into a plain model."""
    try:
        adapter_cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise KlvizError(f"{_member(shown, path, path / 'adapter_config.json')} is not valid JSON ({e}).") from None
    if not bases:
        raise KlvizError(f"{shown} is a PEFT adapter (for {adapter_cfg.get('base_model_name_or_path')!r}) "
                         "but no base model was given: pass the base model's local folder.")
    if not (path / "adapter_model.safetensors").is_file():
        if not (path / "adapter_model.bin").is_file():
            raise KlvizError(f"{shown} has no adapter weights (adapter_model.safetensors).")
        check_pickle(path / "adapter_model.bin", _member(shown, path, path / "adapter_model.bin"))
    base = _load(bases[0], f"{role} base", dev, dt, bases[1:])
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(base.model, str(path), is_trainable=False)
        model = peft_model.merge_and_unload()
    except SafetensorError as e:
        raise KlvizError(f"{shown}: its adapter weights (adapter_model.safetensors) could not be read "
                         f"({_first_line(e)}).") from None
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise KlvizError(f"{shown}: the adapter does not apply to its base {base.info.path} "
                         f"({_first_line(e)}).") from None
    tok = _load_tokenizer(path, shown) if _has_tokenizer_files(path) else base.tokenizer
    return model, tok, base.info.path, base.info.device


# ---- pair checks -----------------------------------------------------------------------------

def tokenizer_difference(a, b, *, pad_may_be_missing: bool = False) -> str | None:
    """How tokenizer b differs from a, in words, or None when they are the same.

    pad_may_be_missing: a pad token set on one side only is no difference (reward models often
    have none; padding never changes what a token id means).
    """
    va, vb = a.get_vocab(), b.get_vocab()
    if len(va) != len(vb):
        return f"vocabulary sizes differ ({len(va)} tokens vs {len(vb)})"
    if va != vb:
        ia, ib = {i: t for t, i in va.items()}, {i: t for t, i in vb.items()}
        first = min(i for i in set(ia) | set(ib) if ia.get(i) != ib.get(i))
        return f"token id {first} is {ia.get(first)!r} vs {ib.get(first)!r}"
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        ta, tb = getattr(a, name, None), getattr(b, name, None)
        if name == "pad_token" and pad_may_be_missing and (ta is None or tb is None):
            continue
        if ta != tb:
            return f"the {name} is {getattr(a, name, None)!r} vs {getattr(b, name, None)!r}"
    specials_a, specials_b = set(a.all_special_tokens), set(b.all_special_tokens)
    if pad_may_be_missing:
        specials_a.discard(a.pad_token), specials_b.discard(b.pad_token)
    if specials_a != specials_b:
        return f"the special tokens are {sorted(specials_a)} vs {sorted(specials_b)}"
    ea, eb = a(PROBE_TEXT).input_ids, b(PROBE_TEXT).input_ids
    if ea != eb:
        return f"they encode the same text differently ({ea[:8]}... vs {eb[:8]}...)"
    return None


def check_same_tokenizer(policy_tok, sft_tok, policy_path: str, sft_path: str) -> None:
    """Refuse a pair whose tokenizers differ in vocabulary, special tokens or encoding."""
    how = tokenizer_difference(policy_tok, sft_tok)
    if how is not None:
        raise KlvizError(f"The tokenizers of {policy_path} (policy) and {sft_path} (sft) differ: {how}; "
                         "klviz compares two models only over the same tokenizer.")


def _n_logits(model) -> int:
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def check_logit_sizes(policy: LoadedModel, sft: LoadedModel) -> None:
    """Refuse models whose output vocabularies differ, or are smaller than the tokenizer's."""
    np_, ns = _n_logits(policy.model), _n_logits(sft.model)
    if np_ != ns:
        raise KlvizError(f"The logit sizes of {policy.info.path} ({np_}) and {sft.info.path} ({ns}) differ, "
                         "so their next-token distributions cannot be compared.")
    if len(sft.tokenizer) > ns:
        raise KlvizError(f"The tokenizer of {sft.info.path} has {len(sft.tokenizer)} tokens but the models "
                         f"emit only {ns} logits, so some tokens could never be scored.")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__).rstrip(".")[:300]
