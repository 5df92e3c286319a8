"""The sidebar's "Responses file": responses the user already has, scored by the pair in the analysis worker,
give the table `klviz score --input` writes for the same file (a klviz JSONL typed as a path, on the shipped
sample pair; an uploaded TRL completions file of chat messages, on a tiny pair with a chat template, since the
sample tokenizer has none); a malformed line is one st.error naming the file
as the user gave it and the line, with no table and no server path."""

import json
import os

import numpy as np
import pandas as pd
import torch
from streamlit.testing.v1 import AppTest

from klviz.app import guard, sidebar
from klviz.app.keys import Keys as K
from klviz.cli import main
from tests.helpers.tiny import save_pair
from tests.app.test_pages import APP, ROOT, TIMEOUT, _fresh, allow_root, charts, clean, current, shown  # noqa: F401

PAIR = "Sample: policy vs SFT"
KLVIZ_ROWS = [{"prompt": "The food was", "response": " great and the staff kind", "step": 3, "reward": 0.5},
              {"prompt": "The room", "response": " was small", "step": 3, "reward": -1.25},
              {"prompt": "The food was", "response": " cold", "step": 4, "reward": 0.0}]
TRL_ROWS = [{"prompt": [{"role": "user", "content": "Review the hotel."}],
             "completion": [{"role": "assistant", "content": "The staff were lovely."}],
             "step": "7", "reward": 1.0, "advantage": 0.25},
            {"prompt": [{"role": "user", "content": "Review the food."}],
             "completion": [{"role": "assistant", "content": "Bland and cold."}],
             "step": "7", "reward": -0.5, "advantage": -0.25}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli_table(path, out, pair=("sample_data/policy", "sample_data/sft")) -> pd.DataFrame:
    """What `klviz score --input` writes for the file, on the same pair, on one thread as the analysis worker
    runs (klviz.workers): float32 matmuls sum in another order on more threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
            assert main(["score", "--policy", str(pair[0]), "--sft", str(pair[1]), "--input", str(path),
                     "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return pd.read_parquet(out)


def app_table(at: AppTest) -> pd.DataFrame:
    """The table the worker sent for the page's View (the server's finished tables, klviz.app.guard)."""
    table = guard._analyses().table(current(at).table_key)
    assert table is not None
    return table


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    for col in want.columns:
        a, b = got[col].reset_index(drop=True), want[col].reset_index(drop=True)
        if pd.api.types.is_float_dtype(b):
            np.testing.assert_allclose(a.to_numpy(np.float64), b.to_numpy(np.float64), rtol=1e-9, atol=1e-12,
                                       err_msg=col)
        elif isinstance(b.iloc[0], np.ndarray):  # top-k id / probability lists
            assert all(np.allclose(x, y, rtol=1e-9, atol=1e-12) for x, y in zip(a, b)), col
        else:
            assert a.tolist() == b.tolist(), col


def scoring(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in {K.PAIR: PAIR, K.RESPONSES_MODE: sidebar.SCORE_FILE, **state}.items():
        at.session_state[key] = value
    return at


def test_a_typed_klviz_jsonl_scores_as_the_cli_does(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "rollouts.jsonl", KLVIZ_ROWS)
    want = cli_table(path, tmp_path / "cli.parquet")
    allow_root(monkeypatch, tmp_path)
    at = clean(scoring(**{K.RESPONSES_PATH: str(path)}).run())
    assert all(w.disabled for w in at.number_input if w.key in (K.N_PROMPTS, K.SAMPLES, K.MAX_NEW_TOKENS, K.SEED))
    assert current(at).responses.shown == str(path) and len(charts(at)) == 1
    got = app_table(at)
    assert {"step", "reward"} <= set(got.columns)  # per-response fields become columns, as in the CLI
    assert_same_table(got, want)
    key = current(at).table_key
    write_jsonl(path, KLVIZ_ROWS[:2])  # a changed file is another table
    clean(at.run())
    assert current(at).table_key != key
    assert_same_table(app_table(at), cli_table(path, tmp_path / "cli2.parquet"))


def test_an_uploaded_trl_chat_file_scores_as_the_cli_does(tmp_path, monkeypatch):
    policy, sft = save_pair(tmp_path / "pair", kind="gpt2")  # the sample pair has no chat template: this one has
    path = write_jsonl(tmp_path / "completions.jsonl", TRL_ROWS)
    want = cli_table(path, tmp_path / "cli.parquet", (policy, sft))
    allow_root(monkeypatch, tmp_path)
    at = scoring(**{K.PAIR: sidebar.LOCAL, K.POLICY_PATH: str(policy), K.SFT_PATH: str(sft)}).run()
    at.file_uploader(key=K.RESPONSES_UPLOAD).set_value(("completions.jsonl", path.read_bytes(), "application/json"))
    clean(at.run())
    assert current(at).responses.shown == "completions.jsonl"
    got = app_table(at)
    assert {"step", "reward", "advantage"} <= set(got.columns) and set(got["step"]) == {7}
    assert_same_table(got, want)


def test_a_malformed_line_is_one_sentence_naming_the_file_and_line(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(KLVIZ_ROWS[0]) + "\n{not json\n")
    allow_root(monkeypatch, tmp_path)
    typed = os.path.relpath(bad, ROOT)  # typed relative to the repository: the message says it as typed
    at = scoring(**{K.RESPONSES_PATH: typed})
    at.run()
    assert not at.exception and len(at.error) == 1 and charts(at) == []
    message = shown(at.error[0].value)
    named, _, rest = message.partition(", line 2: ")
    assert named == typed and rest.startswith("not valid JSON"), message  # as typed, not the server's real path


def test_a_malformed_upload_names_the_upload_and_is_deleted(tmp_path):
    at = scoring().run()
    at.file_uploader(key=K.RESPONSES_UPLOAD).set_value(
        ("mine.jsonl", (json.dumps(TRL_ROWS[0]) + "\n" + json.dumps({"prompt": "x"}) + "\n").encode(), "text/plain"))
    at.run()
    assert not at.exception and len(at.error) == 1 and charts(at) == []
    message = shown(at.error[0].value)
    assert message.startswith("mine.jsonl, line 2: expected") and str(tmp_path) not in message, message
    saved = [p for p in (tmp_path / "uploads").rglob("*") if p.is_file()]
    assert saved == []  # the refused upload was deleted at once
    at.run()  # the upload still shows its sentence, in the sidebar now
    assert [shown(e.value) for e in at.error][:1] == [message]
