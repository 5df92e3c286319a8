"""AppTest: what the browser may reach (issue 13). Code rewards need --allow-code in every reward field;
paths outside the allowed roots, devices and huge trees are one quick sentence; uploads leave nothing
behind when refused; a truncated GGUF is st.error, not a traceback."""

import os
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from klviz import pairs
from klviz.app import sidebar
from klviz.app.keys import Keys as K
from tests.app import test_pages
from tests.app.test_pages import APP, TIMEOUT, allow_root, shown

_fresh = test_pages._fresh  # autouse: fresh caches, private upload and save folders

CODE_REWARDS = ["pty:spawn", "tests.helpers.writes_file:touch"]


def _app(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def _errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    return [shown(e.value) for e in at.error]


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "ran"
    monkeypatch.setenv("KLVIZ_TEST_MARKER", str(path))
    sys.modules.pop("tests.helpers.writes_file", None)
    yield path
    assert not path.exists() and "tests.helpers.writes_file" not in sys.modules  # nothing ran, nothing imported


@pytest.mark.parametrize("reward", CODE_REWARDS)
def test_code_rewards_run_nothing_in_any_reward_field_without_opt_in(reward, marker):
    at = _app(**{K.N_PROMPTS: 2, K.OVERVIEW_REWARD: "other…", K.OVERVIEW_REWARD_OTHER: reward})
    at.run()
    at.run()  # the default view's second run draws the figures' controls
    errors = _errors(at)
    assert any("--allow-code" in e and reward in e for e in errors), errors
    assert any("--allow-code" in c.value for c in at.caption)  # the page says how to enable it
    # The Live PPO reward is a selectbox with accept_new_options, which AppTest cannot fill with a new
    # value: its refusal is checked where the page's Start lands (runs.start_run -> PPOJob, allow_code from
    # the server's options), in tests/unit/test_reward_gate.py::test_a_ppo_job_refuses_code_rewards_before_spawning.


@pytest.mark.parametrize("typed", ["/dev/zero", "/usr", "~", "../../etc", "/etc/passwd"])
def test_paths_outside_the_roots_answer_at_once_and_never_reach_the_page(typed):
    at = _app(**{K.PAIR: sidebar.LOCAL, K.POLICY_PATH: typed, K.SFT_PATH: "sample_data/sft"})
    start = time.monotonic()
    at.run()
    elapsed = time.monotonic() - start
    errors = _errors(at)
    assert len(errors) == 1 and repr(typed) in errors[0] and "outside the allowed folders" in errors[0]
    assert elapsed < 10  # the whole page run (AppTest's own overhead included); the check itself < 1 s (unit)


def test_a_prompts_file_outside_the_roots_is_never_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the launch code is 1234\n")
    at = _app(**{K.PROMPTS: str(secret)}).run()
    at.switch_page("pages/token_inspector.py").run()
    errors = _errors(at)
    assert any("outside the allowed folders" in e for e in errors)
    page = " ".join(str(getattr(e, "value", "")) for e in at.main)
    assert "launch code" not in page


def test_a_fifo_inside_the_roots_is_refused(tmp_path, monkeypatch):
    allow_root(monkeypatch, tmp_path)
    os.mkfifo(tmp_path / "pipe")
    at = _app(**{K.PAIR: sidebar.LOCAL, K.POLICY_PATH: str(tmp_path / "pipe"), K.SFT_PATH: "sample_data/sft"}).run()
    assert any("device, FIFO or socket" in e for e in _errors(at))


def test_a_truncated_gguf_upload_is_an_error_and_leaves_no_file():
    pytest.importorskip("gguf")
    cut = b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (5).to_bytes(8, "little")  # 24 bytes
    at = _app(**{K.PAIR: sidebar.UPLOAD, K.N_PROMPTS: 2}).run()
    at.file_uploader(key=K.POLICY_UPLOAD).set_value(("cut.gguf", cut, "application/octet-stream"))
    at.file_uploader(key=K.SFT_UPLOAD).set_value(("cut_sft.gguf", cut, "application/octet-stream"))
    at.run()
    errors = _errors(at)
    assert len(errors) == 1 and "cut" in errors[0] and "klviz-uploads" not in errors[0]
    left = [p.name for p in Path(pairs.UPLOAD_ROOT).rglob("*") if p.is_file()]
    assert "cut.gguf" not in left  # the refused upload is gone at once (the SFT, not yet refused, goes with the session)


@pytest.mark.parametrize("typed", ["app.py", "sample_data/dashboard_table.parquet"])
def test_a_bad_prompts_file_is_named_as_typed_never_by_its_server_path(typed):
    # Inside the roots but no prompts file (not JSONL, not UTF-8): the sentence named /work/... before.
    at = _app(**{K.PROMPTS: typed}).run()
    at.switch_page("pages/token_inspector.py").run()
    errors = _errors(at)
    assert errors and all(e.startswith(typed) for e in errors), errors
    assert not [e for e in errors if str(test_pages.ROOT) in e], errors
