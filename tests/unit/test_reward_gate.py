"""Rewards that run code (module:function, a model folder) are refused without the owner's opt-in."""

import sys

import pytest

from klviz.errors import KlvizError
from klviz.ppo.rewards import check_allowed, get_reward, runs_code

CODE = ["pty:spawn", "os:system", "tests.helpers.writes_file:touch", "/tmp", "sample_data/sft", "~/reward_model"]


@pytest.mark.parametrize("name", CODE)
def test_code_rewards_are_refused_without_opt_in_before_any_import(name, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("KLVIZ_TEST_MARKER", str(marker))
    sys.modules.pop("tests.helpers.writes_file", None)
    assert runs_code(name)
    with pytest.raises(KlvizError, match="--allow-code") as e:
        get_reward(name, tokenizer=None, allow_code=False)
    assert "\n" not in str(e.value) and repr(name) in str(e.value)
    assert not marker.exists() and "tests.helpers.writes_file" not in sys.modules


@pytest.mark.parametrize("name", ["sentiment", "length", "keyword:delicious", " keyword:good "])
def test_builtin_rewards_need_no_opt_in(name):
    assert not runs_code(name)
    check_allowed(name, allow_code=False)


def test_the_cli_keeps_module_function_rewards(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("KLVIZ_TEST_MARKER", str(marker))
    sys.modules.pop("tests.helpers.writes_file", None)
    reward = get_reward("tests.helpers.writes_file:touch", tokenizer=None)  # allow_code defaults to True
    assert reward(["p"], ["r"]).tolist() == [0.0] and marker.read_text() == "imported\ncalled\n"


@pytest.mark.parametrize("name", ["pty:spawn", "tests.helpers.writes_file:touch"])
def test_a_ppo_job_refuses_code_rewards_before_spawning(name, tmp_path, monkeypatch):
    from klviz.ppo.config import PPOConfig
    from klviz.ppo.jobs import JobRegistry, PPOJob

    marker = tmp_path / "marker"
    monkeypatch.setenv("KLVIZ_TEST_MARKER", str(marker))
    spawned = []
    monkeypatch.setattr("klviz.workers.Worker.spawn", lambda *a, **k: spawned.append(a))
    cfg = PPOConfig(reward=name, device="cpu")
    with pytest.raises(KlvizError, match="--allow-code"):
        PPOJob("sample_data/sft", ["p"], cfg, allow_code=False)
    with pytest.raises(KlvizError, match="--allow-code"):  # the dashboard's path: runs.start_run
        JobRegistry(max_jobs=2).start("session", "sample_data/sft", ["p"], cfg, allow_code=False)
    assert not spawned and not marker.exists()


@pytest.mark.parametrize("name", ["keyword:", "keyword:   ", "  "])
def test_a_malformed_reward_is_refused_before_a_run_starts(name, monkeypatch):
    # Live PPO started a run for "keyword:" that then ended in "error"; now the Start is refused at once.
    from klviz.ppo.config import PPOConfig
    from klviz.ppo.jobs import JobRegistry

    spawned = []
    monkeypatch.setattr("klviz.workers.Worker.spawn", lambda *a, **k: spawned.append(a))
    registry = JobRegistry(max_jobs=2)
    with pytest.raises(KlvizError, match="needs a word after the colon" if name.strip() else "reward name is empty"):
        registry.start("session", "sample_data/sft", ["p"], PPOConfig(reward=name, device="cpu"), allow_code=False)
    assert not spawned
