"""read_prompts and SamplingConfig: every malformed input ends in one sentence naming the file (and line)."""

import json

import pytest

from klviz.errors import KlvizError
from klviz.prompts import Prompt, read_prompts
from klviz.sampling import SamplingConfig


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_jsonl_text_and_chat_prompts_with_optional_ids(tmp_path):
    chat = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "the food"}]
    path = write_lines(tmp_path / "p.jsonl", [json.dumps({"prompt": "the room was"}), "",
                                              json.dumps({"id": "c1", "messages": chat}),
                                              json.dumps({"id": 7, "prompt": "x"})])
    got = read_prompts(path)
    assert [p.id for p in got] == ["1", "c1", "7"]  # default id: the line number
    assert got[0].text == "the room was" and got[0].messages is None
    assert [dict(m) for m in got[1].messages] == chat and got[1].text is None
    assert got[1].origin == f"{path}, line 3"


def test_txt_is_one_prompt_per_line_skipping_blank_lines(tmp_path):
    path = write_lines(tmp_path / "p.txt", ["the food was", "  ", "the staff"])
    assert read_prompts(path) == [Prompt(id="1", text="the food was", origin=f"{path}, line 1"),
                                  Prompt(id="3", text="the staff", origin=f"{path}, line 3")]


@pytest.mark.parametrize("line, problem", [
    ('{"prompt": "ok"', r"line 2: not valid JSON"),
    ('["a list"]', r"line 2: expected a JSON object"),
    ('{"id": "x"}', r"line 2: give either `prompt` \(text\) or `messages` \(a chat\), not neither"),
    ('{"prompt": "a", "messages": []}', r"line 2: give either .* not both"),
    ('{"prompt": ""}', r"line 2: `prompt` must be a non-empty string"),
    ('{"prompt": 3}', r"line 2: `prompt` must be a non-empty string"),
    ('{"messages": [{"role": "user"}]}', r"line 2: `messages` must be a non-empty list"),
    ('{"messages": []}', r"line 2: `messages` must be a non-empty list"),
    ('{"prompt": "a", "id": [1]}', r"line 2: `id` must be a string or an integer"),
    ('{"prompt": "a", "id": "first"}', r"line 2: id 'first' was already used at .*line 1"),
], ids=["json", "not-object", "neither", "both", "empty", "not-string", "message-shape", "no-messages",
        "id-type", "duplicate-id"])
def test_malformed_jsonl_line_is_named(tmp_path, line, problem):
    path = write_lines(tmp_path / "prompts.jsonl", ['{"id": "first", "prompt": "fine"}', line])
    with pytest.raises(KlvizError, match=rf"prompts\.jsonl.*{problem}"):
        read_prompts(path)


@pytest.mark.parametrize("name, content, problem", [
    ("empty.jsonl", "\n\n", r"empty\.jsonl is empty"),
    ("empty.txt", "\n  \n", r"empty\.txt is empty"),
    ("latin1.txt", b"caf\xe9\n", r"latin1\.txt is not UTF-8 text"),
])
def test_empty_or_undecodable_files_are_refused(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(KlvizError, match=problem):
        read_prompts(path)


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.txt"])
def test_missing_prompts_file_is_named(tmp_path, name):
    with pytest.raises(KlvizError, match=rf"{name}: no such file"):
        read_prompts(tmp_path / name)


def test_sampling_config_defaults_match_the_cli():
    cfg = SamplingConfig()
    assert (cfg.samples_per_prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k, cfg.seed,
            cfg.sample_from, cfg.batch_size) == (4, 64, 1.0, 1.0, 0, 0, "policy", 16)


@pytest.mark.parametrize("kwargs, problem", [
    ({"samples_per_prompt": 0}, "samples_per_prompt must be an integer >= 1"),
    ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer >= 1"),
    ({"batch_size": True}, "batch_size must be an integer >= 1"),
    ({"top_k": -1}, "top_k must be an integer >= 0"),
    ({"seed": -3}, "seed must be an integer >= 0"),
    ({"temperature": -0.1}, "temperature must be between 0"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"sample_from": "ref"}, "sample_from must be one of policy, sft, both"),
])
def test_sampling_config_rejects_bad_values(kwargs, problem):
    with pytest.raises(KlvizError, match=problem):
        SamplingConfig(**kwargs)
