"""`klviz score` end to end: a table from saved tiny models, and bad input -> one sentence, exit 2, no file."""

import json

import numpy as np
import pandas as pd
import pytest

from klviz.cli import main
from klviz.io import read_metadata
from tests.helpers.tiny import save_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return save_pair(tmp_path_factory.mktemp("pair"), kind="llama")


def _write(path, lines):
    path.write_text("".join(l if isinstance(l, str) else json.dumps(l) + "\n" for l in lines))
    return path


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_score_writes_every_column_and_metadata(pair, tmp_path, capsys):
    policy, sft = pair
    inp = _write(tmp_path / "in.jsonl", [{"prompt": "the food was", "response": " very good"},
                                        {"prompt_ids": [0, 5, 6], "response_ids": [7, 8, 9], "prompt_id": "x",
                                         "sample_id": 3}])
    out = tmp_path / "out.parquet"
    code, err = run(capsys, "score", "--policy", str(policy), "--sft", str(sft), "--input", str(inp),
                    "--out", str(out), "--top-k", "4")
    assert code == 0, err
    df = pd.read_parquet(out)
    assert df["prompt_id"].tolist()[-3:] == ["x"] * 3 and df["sample_id"].tolist()[-3:] == [3] * 3
    assert df["position"].tolist()[-3:] == [0, 1, 2] and df["token_id"].tolist()[-3:] == [7, 8, 9]
    assert df["prompt_id"].iloc[0] == "1"  # default prompt_id: the line number
    assert all(len(v) == 7 for v in df["mass_gained_by_sft_bin"]) and all(len(v) == 4 for v in df["gained_top_ids"])
    np.testing.assert_allclose([sum(v) for v in df["kl_reverse_by_sft_bin"]], df["kl_reverse"], rtol=1e-9, atol=1e-9)
    meta = read_metadata(out)
    assert meta["policy"] == str(policy) and meta["sft"] == str(sft) and meta["device"] == "cpu"
    assert meta["dtype"] == "float32" and meta["band_edges"].startswith("0.0,1e-06")
    assert meta["version"]


@pytest.mark.parametrize("content,needle", [
    (None, "no such file"),
    ("", "is empty"),
    ('{"prompt": "a", "response": "b"}\n{"prompt": oops}\n', "line 2: not valid JSON"),
    ('{"prompt_ids": [0, 5], "response_ids": [7, 100000]}\n', "token id 100000, outside the model's vocabulary"),
    ('{"prompt": "a"}\n', 'line 1: expected klviz\'s "prompt"/"response"'),
    ('{"prompt": "a", "response": 3}\n', 'line 1: expected string fields "prompt" and "response"'),
])
def test_bad_input_is_one_sentence_exit_2_no_output(pair, tmp_path, capsys, content, needle):
    policy, sft = pair
    inp = tmp_path / "in.jsonl"
    if content is not None:
        inp.write_text(content)
    out = tmp_path / "out.parquet"
    code, err = run(capsys, "score", "--policy", str(policy), "--sft", str(sft), "--input", str(inp),
                    "--out", str(out))
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert needle in last and last.startswith("klviz: error: ") and err.count("klviz: error") == 1, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == ([inp] if content is not None else [])  # nothing written, no temp file
