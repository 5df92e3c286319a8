"""klviz.models on tiny random checkpoints in every source form, and every bad input it must refuse.

Each source form (folder, .zip, pickled .bin, LoRA adapter, GGUF) must give the same token table as
the plain folder it came from; each bad input must end in one KlvizError sentence naming the file.
"""

import copy
import json
import os
import pathlib
import re
import shutil
import stat
import zipfile

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, T5Config, T5ForConditionalGeneration

import klviz.models as models
import klviz.checkpoints as checkpoints
from klviz.engine.divergence import ScoreInput, score
from klviz.errors import KlvizError
from klviz.models import extract_zip, load_model, load_pair, placement
from tests.helpers.tiny import (make_tiny_model, make_tokenizer, save_model, save_pair, torch_threads,
                                write_gguf_llama)

INPUTS = [ScoreInput(prompt_ids=[0, 260, 265], response_ids=[268, 279, 272, 1], prompt_id="a"),
          ScoreInput(prompt_ids=[0, 30, 94], response_ids=[87, 85, 71], prompt_id="b", sample_id=1)]


def table(pair) -> pd.DataFrame:
    return score(pair.policy, pair.sft, pair.tokenizer, INPUTS, top_k=5)


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame, rtol=1e-6, atol=1e-7):
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    for col in ("prompt_id", "sample_id", "position", "token_id", "token", "rank_sft", "rank_policy"):
        assert got[col].tolist() == want[col].tolist(), col
    for col in ("logp_policy", "logp_sft", "kl_reverse", "kl_forward", "tv"):
        torch.testing.assert_close(torch.tensor(got[col].values), torch.tensor(want[col].values),
                                   rtol=rtol, atol=atol)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """A model cache of this module's own, never the user's ~/.cache/klviz."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KLVIZ_CACHE_DIR", str(tmp_path_factory.mktemp("klviz-cache")))
        mp.delenv("KLVIZ_CACHE_MAX_GB", raising=False)
        yield


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def dirs(root):
    """(policy folder, sft folder) of a tiny Llama pair."""
    return save_pair(root / "pair", kind="llama")


@pytest.fixture(scope="module")
def reference(dirs):
    return table(load_pair(*dirs, device="cpu"))


def make_zip(src: pathlib.Path, dest: pathlib.Path, nested: bool = True) -> pathlib.Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, (pathlib.Path(src.name) / f.relative_to(src)) if nested else f.relative_to(src))
    return dest


# ---- every source form scores like the folder ------------------------------------------------

def test_folder_pair_loads_in_eval_mode_and_reports_each_load(dirs, reference):
    lines = []
    pair = load_pair(*dirs, device="cpu", log=lines.append)
    assert not pair.policy.training and not pair.sft.training
    assert pair.device == torch.device("cpu") and pair.dtype == torch.float32
    assert pair.policy_info.kind == pair.sft_info.kind == "folder"
    assert pair.policy_info.n_params == sum(p.numel() for p in pair.policy.parameters())
    assert len(lines) == 2 and lines[0] == pair.policy_info.describe()
    assert "policy: folder" in lines[0] and "params" in lines[0] and "float32 on cpu" in lines[0]
    assert reference["kl_reverse"].gt(0).all()  # the two models really differ


@pytest.mark.parametrize("nested", [True, False], ids=["folder-in-zip", "files-at-top"])
def test_zip_scores_like_the_folder(dirs, reference, root, nested):
    z = make_zip(dirs[0], root / f"policy-{nested}.zip", nested=nested)
    pair = load_pair(z, dirs[1], device="cpu")
    assert pair.policy_info.kind == "zip (folder)" and pair.policy_info.path == str(z)
    assert_same_table(table(pair), reference, rtol=0, atol=0)


def test_pickled_bin_of_plain_tensors_loads_like_safetensors(dirs, reference, root):
    folder = root / "bin-policy"
    folder.mkdir()
    for f in dirs[0].iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, folder / f.name)
    pol = load_model(dirs[0], device="cpu").model
    torch.save(pol.state_dict(), folder / "pytorch_model.bin")
    assert_same_table(table(load_pair(folder, dirs[1], device="cpu")), reference, rtol=0, atol=0)


@pytest.fixture(scope="module")
def adapter(root, dirs):
    """A LoRA adapter (non-zero B, so it changes the model) on the SFT model, and its merged folder."""
    from peft import LoraConfig, get_peft_model

    sft = load_model(dirs[1], device="cpu").model
    torch.manual_seed(3)
    peft_model = get_peft_model(copy.deepcopy(sft), LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                                                                target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(str(root / "adapter"))
    merged = save_model(peft_model.merge_and_unload(), root / "merged")
    return root / "adapter", merged


def test_lora_adapter_is_merged_onto_the_sft_model_and_scores_like_the_merged_folder(adapter, dirs):
    adapter_dir, merged_dir = adapter
    pair = load_pair(adapter_dir, dirs[1], device="cpu")
    assert pair.policy_info.kind == "adapter" and pair.policy_info.base == str(dirs[1])
    assert type(pair.policy).__name__ == "LlamaForCausalLM"  # a plain model, no PEFT wrapper left
    assert not any("lora" in name for name, _ in pair.policy.named_modules())
    got = table(pair)
    assert got["kl_reverse"].gt(0).all()  # the adapter moved the policy away from its base
    assert_same_table(got, table(load_pair(merged_dir, dirs[1], device="cpu")), rtol=1e-5, atol=1e-6)
    # an explicit base gives the same; the SFT model used as base is left untouched
    explicit = load_pair(adapter_dir, dirs[1], policy_base=dirs[1], device="cpu")
    assert_same_table(table(explicit), got, rtol=0, atol=0)
    assert pair.sft is not pair.policy and table(pair)["logp_sft"].tolist() == got["logp_sft"].tolist()


def test_zipped_adapter_loads(adapter, dirs, root):
    z = make_zip(adapter[0], root / "adapter.zip")
    pair = load_pair(z, dirs[1], device="cpu")
    assert pair.policy_info.kind == "zip (adapter)"
    assert_same_table(table(pair), table(load_pair(adapter[1], dirs[1], device="cpu")), rtol=1e-5, atol=1e-6)


def test_gguf_scores_like_the_folder(dirs, reference, root):
    pytest.importorskip("gguf")
    policy = load_model(dirs[0], device="cpu")
    gguf_path = write_gguf_llama(policy.model, policy.tokenizer, root / "policy.gguf")
    pair = load_pair(gguf_path, dirs[1], device="cpu")
    assert pair.policy_info.kind == "gguf"
    assert_same_table(table(pair), reference, rtol=1e-5, atol=1e-6)


@pytest.fixture
def gguf_copy(dirs, tmp_path, monkeypatch):
    """A GGUF of the policy, and an empty model cache for this test."""
    pytest.importorskip("gguf")
    monkeypatch.setenv("KLVIZ_CACHE_DIR", str(tmp_path / "cache"))
    policy = load_model(dirs[0], device="cpu")
    return write_gguf_llama(policy.model, policy.tokenizer, tmp_path / "copy.gguf")


def _spy_loads(monkeypatch) -> list[bool]:
    """Record, for each from_pretrained klviz makes, whether it read a GGUF (dequantized) or a folder."""
    calls, real = [], models._from_pretrained
    monkeypatch.setattr(models, "_from_pretrained",
                        lambda *a, **kw: calls.append("gguf_file" in kw) or real(*a, **kw))
    return calls


def test_gguf_is_dequantized_once_then_loaded_from_the_cache(gguf_copy, dirs, reference, monkeypatch, tmp_path):
    calls = _spy_loads(monkeypatch)
    first = load_pair(gguf_copy, dirs[1], device="cpu")
    assert calls == [True, False, False]  # dequantize into the cache, read it back, the SFT folder
    renamed = gguf_copy.rename(tmp_path / "renamed.gguf")  # the key is the bytes, not the name
    calls.clear()
    second = load_pair(renamed, dirs[1], device="cpu")
    assert calls == [False, False] and second.policy_info.kind == "gguf"
    assert second.policy_info.path == str(renamed)
    assert_same_table(table(second), table(first), rtol=0, atol=0)
    assert_same_table(table(second), reference, rtol=1e-5, atol=1e-6)


def test_gguf_is_parsed_once_per_dequantization(gguf_copy, dirs, reference, monkeypatch):
    """transformers reads a .gguf four times for one model; klviz's dequantization parses it once (and
    converts its metadata once), with the same weights as the folder's, and restores gguf's own reader."""
    import gguf
    from transformers import modeling_gguf_pytorch_utils as hf_gguf

    real_reader, real_load, parsed, converted = gguf.GGUFReader, hf_gguf.load_gguf_checkpoint, [], []

    class Counting(real_reader):
        def __init__(self, path, *a, **kw):
            parsed.append(path)
            super().__init__(path, *a, **kw)

    def spy(*a, **kw):
        converted.append(kw)
        return real_load(*a, **kw)

    monkeypatch.setattr(gguf, "GGUFReader", Counting)
    monkeypatch.setattr(hf_gguf, "load_gguf_checkpoint", spy)
    pair = load_pair(gguf_copy, dirs[1], device="cpu")
    assert len(parsed) == 1 and [kw.get("return_tensors") for kw in converted] == [False, True]
    assert gguf.GGUFReader is Counting and hf_gguf.load_gguf_checkpoint is spy  # restored after
    assert_same_table(table(pair), reference, rtol=1e-5, atol=1e-6)


def test_gguf_without_the_cache_is_dequantized_on_every_load(gguf_copy, dirs, reference, monkeypatch):
    monkeypatch.setenv("KLVIZ_CACHE_MAX_GB", "0")
    calls = _spy_loads(monkeypatch)
    for _ in range(2):
        assert_same_table(table(load_pair(gguf_copy, dirs[1], device="cpu")), reference, rtol=1e-5, atol=1e-6)
    assert calls == [True, False] * 2


@pytest.mark.parametrize("cache", ["on", "off"])
def test_a_model_loaded_from_a_gguf_saves_as_a_plain_folder(gguf_copy, dirs, reference, monkeypatch, tmp_path, cache):
    if cache == "off":
        monkeypatch.setenv("KLVIZ_CACHE_MAX_GB", "0")
    loaded = load_model(gguf_copy, device="cpu")
    assert getattr(loaded.model, "hf_quantizer", None) is None
    assert not hasattr(loaded.model.config, "quantization_config")
    loaded.model.save_pretrained(str(tmp_path / "saved"))  # transformers refused: "quantized with gguf"
    loaded.tokenizer.save_pretrained(str(tmp_path / "saved"))
    assert_same_table(table(load_pair(tmp_path / "saved", dirs[1], device="cpu")), reference, rtol=1e-5, atol=1e-6)


def test_strip_quantizer_removes_what_transformers_leaves_on_a_gguf_model(gguf_copy, dirs):
    """transformers' legacy GGUF loader dequantizes yet keeps hf_quantizer, and save_pretrained then refuses."""
    from transformers import AutoModelForCausalLM

    raw = AutoModelForCausalLM.from_pretrained(str(gguf_copy.parent), gguf_file=str(gguf_copy))
    if getattr(raw, "hf_quantizer", None) is None:
        pytest.skip("this transformers leaves no quantizer marks on a dequantized GGUF model")
    with pytest.raises(ValueError, match="not serializable"):
        raw.save_pretrained(str(gguf_copy.parent / "refused"))
    models.strip_quantizer(raw, "copy.gguf").save_pretrained(str(gguf_copy.parent / "saved"))
    assert (gguf_copy.parent / "saved" / "model.safetensors").is_file()


def test_zip_is_unpacked_once_then_loaded_from_the_cache(dirs, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("KLVIZ_CACHE_DIR", str(tmp_path / "cache"))
    z = make_zip(dirs[0], tmp_path / "once.zip")
    assert_same_table(table(load_pair(z, dirs[1], device="cpu")), reference, rtol=0, atol=0)

    def no_unpacking(*_):
        raise AssertionError("the zip was unpacked again")

    monkeypatch.setattr(models, "extract_zip", no_unpacking)
    assert_same_table(table(load_pair(z, dirs[1], device="cpu")), reference, rtol=0, atol=0)


def test_gguf_without_the_gguf_package_says_how_to_install_it(root, monkeypatch):
    path = root / "fake.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else real(n, *a))
    with pytest.raises(KlvizError, match=r"fake\.gguf is a GGUF file.*pip install 'klviz\[gguf\]'"):
        load_model(path, device="cpu")


# ---- checkpoints that would run code ---------------------------------------------------------

class MarkerPickle:
    """Unpickling this would create the marker file: the proof that checkpoint code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def evil_folder(dirs, dest: pathlib.Path, marker, keep_safetensors=False) -> pathlib.Path:
    dest.mkdir()
    for f in dirs[0].iterdir():
        if keep_safetensors or f.suffix != ".safetensors":
            shutil.copy(f, dest / f.name)
    state = dict(load_model(dirs[0], device="cpu").model.state_dict())
    state["payload"] = MarkerPickle(marker)
    torch.save(state, dest / "pytorch_model.bin")
    return dest


def test_pickle_that_runs_code_is_refused_by_name_and_never_runs(dirs, tmp_path):
    marker = tmp_path / "PWNED"
    folder = evil_folder(dirs, tmp_path / "evil", marker)
    with pytest.raises(KlvizError, match=r"evil/pytorch_model\.bin is a pickle that torch\.load\(weights_only=True\) refuses"):
        load_pair(folder, dirs[1], device="cpu")
    assert not marker.exists()
    torch.load(folder / "pytorch_model.bin", weights_only=False)  # the fixture is live: a plain load runs it
    assert marker.exists()


def test_safetensors_are_preferred_over_a_pickle_beside_them(dirs, reference, tmp_path):
    marker = tmp_path / "PWNED"
    folder = evil_folder(dirs, tmp_path / "both", marker, keep_safetensors=True)
    assert_same_table(table(load_pair(folder, dirs[1], device="cpu")), reference, rtol=0, atol=0)
    assert not marker.exists()


def test_pickled_adapter_that_runs_code_is_refused(adapter, dirs, tmp_path):
    marker = tmp_path / "PWNED"
    folder = tmp_path / "evil-adapter"
    shutil.copytree(adapter[0], folder)
    (folder / "adapter_model.safetensors").unlink()
    torch.save({"x": MarkerPickle(marker)}, folder / "adapter_model.bin")
    with pytest.raises(KlvizError, match=r"adapter_model\.bin is a pickle"):
        load_pair(folder, dirs[1], device="cpu")
    assert not marker.exists()


def damage(f: pathlib.Path, how: str) -> None:
    """Overwrite a .safetensors file: a header that is no JSON, or the file cut in half (a failed copy)."""
    data = f.read_bytes()
    f.write_bytes((16).to_bytes(8, "little") + b"{" * 16 + data[24:] if how == "header" else data[: len(data) // 2])


@pytest.mark.parametrize("how", ["header", "cut"])
def test_a_damaged_safetensors_file_is_one_sentence(dirs, adapter, tmp_path, how):
    # safetensors raises its own SafetensorError (no OSError): the dashboard showed it as a traceback.
    folder = shutil.copytree(dirs[0], tmp_path / "damaged")
    damage(folder / "model.safetensors", how)
    with pytest.raises(KlvizError, match=r"damaged: the policy model could not be loaded \(.+\)\.$"):
        load_pair(folder, dirs[1], device="cpu")
    folder = shutil.copytree(adapter[0], tmp_path / "damaged_adapter")
    damage(folder / "adapter_model.safetensors", how)
    with pytest.raises(KlvizError, match=r"damaged_adapter: its adapter weights \(adapter_model\.safetensors\) "
                                         r"could not be read \(.+\)\.$"):
        load_pair(folder, dirs[1], device="cpu")


def test_a_bad_file_in_an_upload_is_named_in_the_upload_not_where_it_was_unpacked(dirs, adapter, tmp_path):
    # An upload is unpacked into the model cache; messages named that server path (issue 13: never a server path).
    cache = os.environ["KLVIZ_CACHE_DIR"]
    cases = {}
    broken = shutil.copytree(dirs[0], tmp_path / "broken")
    (broken / "config.json").write_text("{not json")
    cases["config.json is not valid JSON"] = broken
    pickled = shutil.copytree(dirs[0], tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"w": "/etc/hostname"}}))
    cases["pytorch_model.bin.index.json names a shard outside the checkpoint (hostname)"] = pickled
    bad_adapter = shutil.copytree(adapter[0], tmp_path / "bad_adapter")
    (bad_adapter / "adapter_config.json").write_text("[")
    cases["adapter_config.json is not valid JSON"] = bad_adapter
    for said, folder in cases.items():
        z = make_zip(folder, tmp_path / f"{folder.name}.zip")
        with pytest.raises(KlvizError) as e:
            load_pair(z, dirs[1], device="cpu")
        assert str(e.value).startswith(f"{z}/{said}"), str(e.value)
        assert cache not in str(e.value) and "zip-" not in str(e.value)
        with pytest.raises(KlvizError, match="^" + re.escape(f"{folder}/{said}")):  # the same for the folder
            load_pair(folder, dirs[1], device="cpu")


def with_remote_code(dirs, folder, marker, model_type):
    """A copy of the policy whose config points at modeling_evil.py, which would create `marker` on import."""
    folder = shutil.copytree(dirs[0], folder)
    (folder / "modeling_evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.Evil"}
    cfg["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_config_that_needs_custom_code_is_refused(dirs, tmp_path):
    marker = tmp_path / "PWNED"
    folder = with_remote_code(dirs, tmp_path / "remote", marker, "evil_arch")
    with pytest.raises(KlvizError, match=r"remote needs its own Python code \(auto_map"):
        load_model(folder, device="cpu")
    assert not marker.exists()


def test_auto_map_of_a_known_architecture_loads_transformers_own_class(dirs, reference, tmp_path):
    marker = tmp_path / "PWNED"
    folder = with_remote_code(dirs, tmp_path / "remote", marker, "llama")
    pair = load_pair(folder, dirs[1], device="cpu")
    assert type(pair.policy).__module__.startswith("transformers.models.llama")
    assert_same_table(table(pair), reference, rtol=0, atol=0)
    assert not marker.exists()


# ---- zips ------------------------------------------------------------------------------------

def bad_zip(path, entries):
    """entries: (name, data, unix mode or None); a valid config.json comes first."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/config.json", "{}")
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("entry, problem", [
    (("../escape.txt", "x", None), "climbs out of the folder"),
    (("model/../../escape.txt", "x", None), "climbs out of the folder"),
    (("/tmp/abs.txt", "x", None), "absolute path"),
    (("model/link", "/etc/passwd", stat.S_IFLNK | 0o777), "symbolic link"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink"])
def test_unsafe_zip_is_refused_before_anything_is_written(tmp_path, entry, problem):
    z = bad_zip(tmp_path / "bad.zip", [entry])
    dest = tmp_path / "out" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(KlvizError, match=rf"bad\.zip holds .*{problem}"):
        extract_zip(z, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "out" / "escape.txt").exists()
    with pytest.raises(KlvizError, match=rf"bad\.zip holds .*{problem}"):
        load_model(z, device="cpu")


def test_zip_over_the_size_limit_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "MAX_UNPACKED_BYTES", 1000)
    z = bad_zip(tmp_path / "big.zip", [("model/weights.bin", "0" * 2000, None)])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(KlvizError, match=r"big\.zip unpacks to .* over klviz's limit"):
        extract_zip(z, dest)
    assert list(dest.iterdir()) == []


def test_corrupt_zip_and_zip_without_model_are_refused(tmp_path):
    z = tmp_path / "empty.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a/readme.txt", "hi")
        zf.writestr("b/readme.txt", "hi")
    with pytest.raises(KlvizError, match=r"empty\.zip holds no model folder"):
        load_model(z, device="cpu")


# ---- pairs that make no sense ----------------------------------------------------------------

def test_differing_vocabularies_are_named(dirs, tmp_path):
    tok = make_tokenizer(extra_tokens=("zzz",))
    other = save_model(make_tiny_model("llama", len(tok)), tmp_path / "other", tok)
    with pytest.raises(KlvizError, match=r"The tokenizers of .*policy \(policy\) and .*other \(sft\) differ: "
                                         r"vocabulary sizes differ \(295 tokens vs 296\)"):
        load_pair(dirs[0], other, device="cpu")


def test_differing_special_tokens_are_named(dirs, tmp_path):
    tok = make_tokenizer()
    tok.eos_token = "<pad>"
    other = save_model(make_tiny_model("llama", len(tok)), tmp_path / "other", tok)
    with pytest.raises(KlvizError, match=r"differ: the eos_token is '<\|endoftext\|>' vs '<pad>'"):
        load_pair(dirs[0], other, device="cpu")


def test_mismatched_logit_sizes_are_refused(dirs, tmp_path):
    padded = save_model(make_tiny_model("llama", len(make_tokenizer()) + 7), tmp_path / "padded")
    with pytest.raises(KlvizError, match=r"The logit sizes of .*policy \(295\) and .*padded \(302\) differ"):
        load_pair(dirs[0], padded, device="cpu")


def test_encoder_only_model_is_refused(dirs, tmp_path):
    tok = make_tokenizer()
    bert = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32))
    folder = save_model(bert, tmp_path / "bert", tok)
    with pytest.raises(KlvizError, match=r"bert is an encoder \(bert with is_decoder false\), not a causal decoder"):
        load_pair(dirs[0], folder, device="cpu")


def test_encoder_decoder_model_is_refused(dirs, tmp_path):
    tok = make_tokenizer()
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=16, d_ff=32, d_kv=8, num_layers=1,
                                             num_heads=2, decoder_start_token_id=0))
    folder = save_model(t5, tmp_path / "t5", tok)
    with pytest.raises(KlvizError, match=r"t5 is an encoder-decoder model \(t5\)"):
        load_pair(folder, dirs[1], device="cpu")


# ---- paths that are not checkpoints ----------------------------------------------------------

@pytest.mark.parametrize("source", ["gpt2", "meta-llama/Llama-3.1-8B-Instruct"])
def test_hub_id_gets_the_offline_sentence(source):
    with pytest.raises(KlvizError, match=rf"^{source}: no such file or folder, and klviz works offline: "
                                         r"download the model to a folder and pass its path\.$"):
        load_model(source, device="cpu")


def test_missing_path_is_named(dirs, tmp_path):
    with pytest.raises(KlvizError, match=r"nope/model\.zip: no such file or folder\.$"):
        load_pair(dirs[0], tmp_path / "nope" / "model.zip", device="cpu")


def test_adapter_without_base_bare_weights_and_plain_folders_are_refused(adapter, dirs, tmp_path):
    with pytest.raises(KlvizError, match=r"adapter is a PEFT adapter .* no base model was given"):
        load_model(adapter[0], device="cpu")
    with pytest.raises(KlvizError, match=r"model\.safetensors is a bare weights file"):
        load_model(dirs[0] / "model.safetensors", device="cpu")
    with pytest.raises(KlvizError, match=r"is neither a Hugging Face model folder"):
        load_model(tmp_path, device="cpu")
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    shutil.copy(dirs[0] / "config.json", no_weights / "config.json")
    with pytest.raises(KlvizError, match=r"noweights has no model weights"):
        load_model(no_weights, device="cpu")
    no_tokenizer = tmp_path / "notokenizer"
    make_tiny_model("gpt2").save_pretrained(str(no_tokenizer))
    with pytest.raises(KlvizError, match=r"notokenizer has no tokenizer files: save the tokenizer files"):
        load_model(no_tokenizer, device="cpu")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(KlvizError, match=r"broken\.zip is not a valid ZIP file"):
        load_model(tmp_path / "broken.zip", device="cpu")


# ---- memory ----------------------------------------------------------------------------------

def test_a_model_that_cannot_fit_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(checkpoints, "_free_bytes", lambda dev: [2 * 2**30])
    with pytest.raises(KlvizError, match=r"big\.gguf: the policy model needs about 4\.5 GiB .*1\.0B params in "
                                         r"float32.* only 2\.0 GiB is free on cpu"):
        placement(10**9, torch.float32, torch.device("cpu"), "big.gguf", "policy")
    assert placement(10**8, torch.float32, torch.device("cpu"), "x", "policy") == ({}, "cpu")


def test_a_model_too_big_for_one_gpu_is_spread_over_all(monkeypatch):
    monkeypatch.setattr(checkpoints, "_free_bytes", lambda dev: [10 * 2**30, 10 * 2**30])
    placed, where = placement(5 * 10**9, torch.bfloat16, torch.device("cuda"), "x", "sft")
    assert placed["device_map"] == "auto" and set(placed["max_memory"]) == {0, 1}
    assert where == "cuda:0,cuda:1 (device_map=auto)"
    assert placement(10**9, torch.bfloat16, torch.device("cuda"), "x", "sft") == (
        {"device_map": {"": "cuda:0"}}, "cuda:0")
    with pytest.raises(KlvizError, match=r"needs about 22\.4 GiB .* only 20\.0 GiB is free on cuda"):
        placement(10**10, torch.bfloat16, torch.device("cuda"), "x", "sft")


def test_param_count_from_config_matches_the_model(dirs):
    loaded = load_model(dirs[0], device="cpu")
    assert models.count_params(loaded.model.config) == loaded.info.n_params
