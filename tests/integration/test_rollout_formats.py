"""Each responses format `klviz score --input` reads, in files of the shape each trainer writes:
the token table's rows are the right tokens, and every per-response field is a column."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from klviz.cli import main
from klviz.errors import KlvizError
from klviz.io import read_metadata
from klviz.rollouts import encode, read_rollouts
from klviz.tokentable import decoder_from_metadata
from tests.helpers.tiny import make_tokenizer, save_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return save_pair(tmp_path_factory.mktemp("pair"), kind="llama")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CHAT = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "the food was"}]
TRL_ROWS = [  # GRPOTrainer's logged completions: step, prompt, completion, one column per reward function, advantage
    {"step": 3, "prompt": CHAT, "completion": [{"role": "assistant", "content": " very good"}],
     "reward": 1.0, "reward_len": 0.5, "advantage": 0.25},
    {"step": 3, "prompt": CHAT, "completion": [{"role": "assistant", "content": " bad"}],
     "reward": -1.0, "reward_len": 0.0, "advantage": -0.25},
    {"step": 4, "prompt": "the room", "completion": " and staff", "reward": 0.0, "reward_len": 1.0, "advantage": 0.0},
]


def test_trl_parquet_chat_and_text(tmp_path, tok):
    # A parquet column holds one type, so the chat rows and the text row go to two files of one folder
    # (TRL writes one parquet per logging step).
    pq.write_table(pa.Table.from_pylist(TRL_ROWS[:2]), tmp_path / "step_3.parquet")
    pq.write_table(pa.Table.from_pylist(TRL_ROWS[2:]), tmp_path / "step_4.parquet")
    fmt, rollouts = read_rollouts(tmp_path)
    assert fmt == "trl" and len(rollouts) == 3
    assert [r.extra["step"] for r in rollouts] == [3, 3, 4]
    assert [r.extra["advantage"] for r in rollouts] == [0.25, -0.25, 0.0]
    assert [(r.prompt_id, r.sample_id) for r in rollouts] == [("0", 0), ("0", 1), ("1", 0)]
    prompt_ids, response_ids = encode(rollouts[0], tok)
    rendered = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert prompt_ids == tok(rendered, add_special_tokens=False)["input_ids"]
    assert response_ids == tok(" very good", add_special_tokens=False)["input_ids"]
    assert encode(rollouts[2], tok)[0] == tok("the room")["input_ids"]  # text prompt: with BOS


def test_verl_folder_in_step_order(tmp_path, tok):
    for step in (10, 2):  # rollout_data_dir/<step>.jsonl, as verl's _dump_generations names them
        _jsonl(tmp_path / f"{step}.jsonl", [{"input": "the food", "output": " was good", "gts": "x",
                                             "score": step / 10, "step": step, "acc": True}])
    fmt, rollouts = read_rollouts(tmp_path)
    assert fmt == "verl" and [r.extra["step"] for r in rollouts] == [2, 10]
    assert [r.extra["score"] for r in rollouts] == [0.2, 1.0] and rollouts[0].extra["gts"] == "x"
    assert rollouts[0].extra["acc"] is True and [r.sample_id for r in rollouts] == [0, 1]
    assert encode(rollouts[0], tok) == (tok("the food")["input_ids"], tok(" was good", add_special_tokens=False)["input_ids"])


def test_rl_logging_board_prompt_keeps_its_specials(tmp_path, tok):
    # RLLoggingBoardLogger decodes the prompt ids without skipping special tokens: the BOS is in the text.
    ids = tok("the food")["input_ids"]
    row = {"step": 7, "prompt": tok.decode(ids), "response": " good", "response_tokens": [" good"],
           "logprobs": [-0.1], "ref_logprobs": [-0.2], "token_rewards": [0.5], "reward": 0.5, "ground_truth": "g"}
    fmt, rollouts = read_rollouts(_jsonl(tmp_path / "rollout_data_rank0.jsonl", [row]))
    assert fmt == "rl_logging_board"
    assert encode(rollouts[0], tok)[0] == ids  # BOS once, not twice
    assert rollouts[0].extra == {"step": 7, "reward": 0.5, "ground_truth": "g"}  # per-token lists left out


@pytest.mark.parametrize("rows,needle", [
    ([{"input": "a", "output": "b"}, {"prompt": "a", "completion": "b"}], "line 2: this row is not in the verl format"),
    ([{"question": "a"}], "line 1: expected klviz's"),
    ([{"prompt": "a", "completion": [{"role": "assistant"}]}], "line 1: `messages` must be"),
])
def test_bad_rows_name_the_line(tmp_path, rows, needle):
    with pytest.raises(KlvizError, match=needle):
        read_rollouts(_jsonl(tmp_path / "r.jsonl", rows))


def test_score_cli_trl_jsonl_columns_and_self_contained(pair, tmp_path, capsys):
    policy, sft = pair
    inp = _jsonl(tmp_path / "completions.jsonl", TRL_ROWS)
    out = tmp_path / "t.parquet"
    code = main(["score", "--policy", str(policy), "--sft", str(sft), "--input", str(inp), "--out", str(out),
                 "--top-k", "3"])
    assert code == 0, capsys.readouterr().err
    df = pd.read_parquet(out)
    seq = df.groupby(["prompt_id", "sample_id"], sort=False)[["step", "reward", "reward_len", "advantage"]].first()
    assert seq.to_dict("records") == [{k: r[k] for k in ("step", "reward", "reward_len", "advantage")} for r in TRL_ROWS]
    meta = read_metadata(out)
    assert meta["input_format"] == "trl" and meta["sft"] == str(sft) and meta["top_k"] == "3"
    decode = decoder_from_metadata(meta)  # the table names its tokens' text: no tokenizer needed
    assert [decode(t) for t in df["token_id"]] == df["token"].tolist()
    tok = make_tokenizer()
    for ids in df["gained_top_ids"].tolist() + df["lost_top_ids"].tolist():
        assert [decode(t) for t in ids] == [tok.decode([int(t)], clean_up_tokenization_spaces=False) for t in ids]


def test_score_cli_malformed_line_exit_2_nothing_written(pair, tmp_path, capsys):
    policy, sft = pair
    inp = tmp_path / "rollouts.jsonl"
    inp.write_text(json.dumps({"input": "a", "output": " b", "step": 1}) + "\n{\"input\": \"a\", \n")
    out = tmp_path / "t.parquet"
    code = main(["score", "--policy", str(policy), "--sft", str(sft), "--input", str(inp), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [f"klviz: error: {inp}, line 2: not valid JSON "
                                                      "(Expecting property name enclosed in double quotes)."]
    assert sorted(tmp_path.iterdir()) == [inp]
