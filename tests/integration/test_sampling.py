"""Sampling and `klviz analyze` on a tiny random pair: reproducible by seed, chat templates, EOS,
truncation, the source column, and a CLI run that writes its table atomically or not at all."""

import argparse
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from klviz.cli.analyze import run
from klviz.errors import KlvizError
from klviz.io import read_metadata
from klviz.models import load_pair
from klviz.prompts import Prompt
from klviz.sampling import SamplingConfig, analyze, sample
from tests.helpers.tiny import save_pair, torch_threads

CHAT = ({"role": "user", "content": "the food"},)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return save_pair(tmp_path_factory.mktemp("sampling"), kind="gpt2")


@pytest.fixture(scope="module")
def pair(dirs):
    return load_pair(*dirs, device="cpu")


@pytest.fixture(scope="module")
def prompts():
    return [Prompt(id="t", text="the food was"),
            Prompt(id="c", messages=tuple(tuple(m.items()) for m in CHAT), origin="chat.jsonl, line 2")]


def cfg(**kw):
    return SamplingConfig(**{"samples_per_prompt": 2, "max_new_tokens": 6, "batch_size": 3, **kw})


def test_prompt_ids_follow_klviz_score_and_chat_prompts_use_the_template(pair, prompts):
    out = sample(pair, prompts, cfg(), progress=False)
    tok = pair.tokenizer
    assert out[0].prompt_ids == tok("the food was").input_ids and out[0].prompt_ids[0] == tok.bos_token_id
    rendered = tok.apply_chat_template(list(CHAT), tokenize=False, add_generation_prompt=True)
    assert rendered == "<s><|user|>the food\n<|assistant|>"
    chat_ids = [x.prompt_ids for x in out if x.prompt_id == "c"]
    assert chat_ids[0] == tok(rendered, add_special_tokens=False).input_ids
    assert chat_ids[0].count(tok.bos_token_id) == 1  # the template's BOS, not a second one
    assert [(x.prompt_id, x.sample_id, x.extra) for x in out] == [
        ("t", 0, {"source": "policy"}), ("t", 1, {"source": "policy"}),
        ("c", 0, {"source": "policy"}), ("c", 1, {"source": "policy"})]


def test_same_seed_same_responses_other_seed_other_responses(pair, prompts):
    a = sample(pair, prompts, cfg(seed=5), progress=False)
    b = sample(pair, prompts, cfg(seed=5), progress=False)
    c = sample(pair, prompts, cfg(seed=6), progress=False)
    assert [x.response_ids for x in a] == [x.response_ids for x in b]
    assert [x.response_ids for x in a] != [x.response_ids for x in c]
    assert len({tuple(x.response_ids) for x in a}) > 1  # samples of one prompt differ from each other


def test_sampling_leaves_the_callers_rng_alone(pair, prompts):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample(pair, prompts, cfg(), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_both_sources_and_policy_samples_do_not_depend_on_sft_sampling(pair, prompts):
    both = sample(pair, prompts, cfg(sample_from="both"), progress=False)
    policy_only = sample(pair, prompts, cfg(sample_from="policy"), progress=False)
    sft_only = sample(pair, prompts, cfg(sample_from="sft"), progress=False)
    assert [x.extra["source"] for x in both] == ["policy"] * 4 + ["sft"] * 4
    assert [x.response_ids for x in both[:4]] == [x.response_ids for x in policy_only]
    assert [x.response_ids for x in both[4:]] == [x.response_ids for x in sft_only]


def test_greedy_decoding_matches_argmax_of_the_model(pair):
    out = sample(pair, [Prompt(id="g", text="the room")], cfg(temperature=0, samples_per_prompt=2), progress=False)
    assert out[0].response_ids == out[1].response_ids
    ids = out[0].prompt_ids
    with torch.no_grad():
        for token in out[0].response_ids:
            assert token == int(pair.policy(torch.tensor([ids])).logits[0, -1].argmax())
            ids = ids + [token]


def test_left_padding_does_not_change_greedy_responses(pair):
    short, long = Prompt(id="s", text="the"), Prompt(id="l", text="the food was very good and the staff")
    together = sample(pair, [short, long], cfg(temperature=0, samples_per_prompt=1, batch_size=2), progress=False)
    alone = [sample(pair, [p], cfg(temperature=0, samples_per_prompt=1), progress=False)[0] for p in (short, long)]
    assert len(together[0].prompt_ids) < len(together[1].prompt_ids)  # the short one was padded
    assert [x.response_ids for x in together] == [x.response_ids for x in alone]


def test_responses_stop_before_eos_and_never_contain_it(dirs):
    fresh = load_pair(*dirs, device="cpu")  # a private copy: this test changes its generation_config
    eos = [1] + list(range(3, 200))  # most of the vocabulary ends a response
    fresh.policy.generation_config.eos_token_id = eos
    out = sample(fresh, [Prompt(id="e", text="the")], cfg(samples_per_prompt=8, max_new_tokens=12), progress=False)
    lengths = [len(x.response_ids) for x in out]
    assert max(lengths) < 12 and not any(t in eos for x in out for t in x.response_ids)


class StubModel:
    """Records what generate got and answers with fixed new tokens (B, 4)."""

    def __init__(self, new):
        self.new, self.seen = torch.tensor(new), {}

    def get_input_embeddings(self):
        return torch.nn.Embedding(1, 1)

    def generate(self, input_ids, attention_mask, generation_config):
        self.seen = {"ids": input_ids.tolist(), "mask": attention_mask.tolist()}
        return torch.cat([input_ids, self.new], dim=1)


def test_generate_left_pads_and_cuts_each_response_at_its_first_eos():
    from klviz.sampling import _generate
    stub = StubModel([[10, 1, 11, 1], [12, 13, 14, 15], [1, 2, 2, 2]])  # 2 is pad, 1 is EOS
    got = _generate(stub, [[5, 6], [7], [8, 9]], None, seed=0, pad=2, eos={1})
    assert stub.seen == {"ids": [[5, 6], [2, 7], [8, 9]], "mask": [[1, 1], [0, 1], [1, 1]]}
    assert got == [[10], [12, 13, 14, 15], []]


def test_long_prompt_is_truncated_from_the_left_with_a_warning(pair):
    text = " ".join(["the food was very good and the staff"] * 30)
    full = pair.tokenizer(text).input_ids
    assert len(full) > 128
    with pytest.warns(UserWarning, match=r"long\.txt, line 1: the prompt has \d+ tokens, more than the 122"):
        out = sample(pair, [Prompt(id="l", text=text, origin="long.txt, line 1")], cfg(samples_per_prompt=1),
                     progress=False)
    assert out[0].prompt_ids == full[-122:]  # 128-token context minus 6 new tokens


def test_no_room_for_any_prompt_is_an_error(pair, prompts):
    with pytest.raises(KlvizError, match=r"max_new_tokens=128 leaves no room for a prompt"):
        sample(pair, prompts, cfg(max_new_tokens=128), progress=False)


def test_chat_prompt_without_a_template_is_named(dirs, tmp_path):
    from tests.helpers.tiny import make_tiny_model, make_tokenizer, save_model
    tok = make_tokenizer(chat_template=None)
    folder = save_model(make_tiny_model("gpt2", len(tok)), tmp_path / "plain", tok)
    plain = load_pair(folder, folder, device="cpu")
    chat = Prompt(id="c", messages=tuple(tuple(m.items()) for m in CHAT), origin="chat.jsonl, line 2")
    with pytest.raises(KlvizError, match=r"chat\.jsonl, line 2: the prompt is a chat .* no chat template"):
        sample(plain, [chat], cfg(), progress=False)


def test_analyze_is_the_token_table_with_a_source_column_and_repeats_by_seed(pair, prompts, capsys):
    c = cfg(sample_from="both", seed=2)
    df = analyze(pair, prompts, c, top_k=4, progress=True)
    assert "sampling (policy)" in capsys.readouterr().err  # progress on stderr
    responses = sample(pair, prompts, c, progress=False)
    assert len(df) == sum(len(x.response_ids) for x in responses)
    assert set(df["source"]) == {"policy", "sft"}
    assert len(df["gained_top_ids"].iloc[0]) == 4
    assert df.groupby(["source", "prompt_id", "sample_id"])["position"].apply(
        lambda s: s.tolist() == list(range(len(s)))).all()
    pd.testing.assert_frame_equal(df, analyze(pair, prompts, c, top_k=4, progress=False))
    # policy-sampled tokens: k1 is the log-ratio of the sampled token under both models
    pol = df[df["source"] == "policy"]
    assert (pol["k1"] - (pol["logp_policy"] - pol["logp_sft"])).abs().max() < 1e-5


# ---- klviz analyze ---------------------------------------------------------------------------

def args_for(dirs, tmp_path, **kw):
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        prompts.write_text(json.dumps({"id": "a", "prompt": "the food was"}) + "\n"
                           + json.dumps({"id": "b", "messages": list(CHAT)}) + "\n")
    base = dict(policy=str(dirs[0]), sft=str(dirs[1]), prompts=str(prompts), out=str(tmp_path / "t.parquet"),
                samples_per_prompt=2, max_new_tokens=5, temperature=1.0, top_p=0.9, top_k=3, seed=4,
                sample_from="both", device="cpu", dtype="auto", batch_size=4, policy_base=None)
    return argparse.Namespace(**{**base, **kw})


def test_cli_writes_the_table_and_records_the_settings(dirs, tmp_path, capsys):
    args = args_for(dirs, tmp_path)
    assert run(args) == 0
    df = pd.read_parquet(args.out)
    assert set(df["source"]) == {"policy", "sft"} and set(df["prompt_id"]) == {"a", "b"}
    meta = read_metadata(args.out)
    assert meta["policy"] == str(dirs[0]) and meta["sft"] == str(dirs[1])
    assert json.loads(meta["sampling"]) == {"samples_per_prompt": 2, "max_new_tokens": 5, "temperature": 1.0,
                                            "top_p": 0.9, "top_k": 0, "seed": 4, "sample_from": "both",
                                            "batch_size": 4}
    assert meta["top_k"] == "3" and meta["command"] == "analyze" and meta["dtype"] == "float32"
    err = capsys.readouterr().err
    assert "policy: folder" in err and "sft: folder" in err and "token rows" in err
    again = args_for(dirs, tmp_path, out=str(tmp_path / "again.parquet"))
    run(again)
    assert pq.read_table(args.out).equals(pq.read_table(again.out))  # same seed, same table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.parquet", "prompts.jsonl", "t.parquet"]


@pytest.mark.parametrize("change, problem", [
    ({"sft": "org/some-model"}, r"org/some-model: no such file or folder, and klviz works offline"),
    ({"prompts": "missing.jsonl"}, r"missing\.jsonl: no such file"),
    ({"out": "no/such/dir/t.parquet"}, r"Cannot write .*t\.parquet: the folder .*dir does not exist"),
    ({"max_new_tokens": 0}, r"max_new_tokens must be an integer >= 1"),
    ({"max_new_tokens": 500}, r"max_new_tokens=500 leaves no room"),
], ids=["hub-id", "missing-prompts", "missing-out-dir", "bad-setting", "fails-after-loading"])
def test_cli_failures_are_one_sentence_and_leave_no_output(dirs, tmp_path, change, problem):
    args = args_for(dirs, tmp_path)
    for key in ("prompts", "out"):
        if key in change:
            change[key] = str(tmp_path / change[key])
    args = argparse.Namespace(**{**vars(args), **change})
    with pytest.raises(KlvizError, match=problem) as err:
        run(args)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


def test_cli_reads_prompts_before_loading_models(dirs, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": \n')
    args = args_for(dirs, tmp_path, prompts=str(bad), policy="does/not-exist")
    with pytest.raises(KlvizError, match=r"bad\.jsonl, line 2: not valid JSON"):
        run(args)


def test_cli_main_exit_codes_and_one_line_errors(dirs, tmp_path, capsys):
    from klviz.cli import main
    args = args_for(dirs, tmp_path)
    argv = ["analyze", "--policy", args.policy, "--sft", args.sft, "--prompts", args.prompts, "--out", args.out,
            "--samples-per-prompt", "1", "--max-new-tokens", "3", "--device", "cpu"]
    assert main(argv) == 0 and pd.read_parquet(args.out)["source"].eq("policy").all()
    capsys.readouterr()
    bad = list(argv)
    bad[bad.index("--sft") + 1] = "Qwen/Qwen2.5-0.5B"
    bad[bad.index("--out") + 1] = str(tmp_path / "never.parquet")
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert err == ("klviz: error: Qwen/Qwen2.5-0.5B: no such file or folder, and klviz works offline: "
                   "download the model to a folder and pass its path.\n")
    assert not (tmp_path / "never.parquet").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_pair_is_bf16_on_the_gpu_and_analyzes(dirs, prompts):
    gpu = load_pair(*dirs, device="auto")
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    assert next(gpu.policy.parameters()).dtype == torch.bfloat16 and gpu.policy_info.device == "cuda:0"
    c = cfg(sample_from="both")
    df = analyze(gpu, prompts, c, top_k=4, progress=False)
    pd.testing.assert_frame_equal(df, analyze(gpu, prompts, c, top_k=4, progress=False))
    assert df["kl_reverse"].ge(-1e-6).all()
