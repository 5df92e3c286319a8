"""Live PPO on a pair of any size (issue 16): the learning rate defaults to klviz.ppo.config.default_lr
scaled to the loaded model (3e-4 collapsed SmolLM2 in one step) and a typed one overrides it; an
estimated run time, from one measured forward pass, is shown before Start; and while a pair loads, the
page and the sidebar say so ("Choose a pair" only when none is chosen)."""

import re
import time

import pytest
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
from transformers import AutoModelForCausalLM

from klviz import models
from klviz.app import runs, sidebar
from klviz.ppo.config import default_lr
from tests.app.test_pages import FEW_PROMPTS, ROOT, K, _fresh, app, clean, click, current, ppo_page, shown

FIXTURES = (_fresh,)  # test_pages' autouse fixture (fresh caches, private folders) applies here too
UNITS = {"s": 1, "min": 60, "h": 3600}


def sample_trainable() -> int:
    """The sample SFT model's trainable parameters in a full-weight run, counted here: every distinct
    weight tensor (the tied head once) and the value head (hidden -> 1)."""
    model = AutoModelForCausalLM.from_pretrained(ROOT / "sample_data" / "sft")
    distinct = {p.data_ptr(): p.numel() for p in model.state_dict().values()}
    return sum(distinct.values()) + model.config.n_embd + 1


def estimate_of(at) -> tuple[float, float]:
    """(total seconds, seconds per step) read from the page's "Estimated run time: about N unit (S s/step)"."""
    text = next(shown(c.value) for c in at.caption if "Estimated run time" in shown(c.value))
    m = re.search(r"Estimated run time: about ([\d.]+) (s|min|h) \(([\d.e+-]+) s/step\)", text)
    assert m, text
    return float(m[1]) * UNITS[m[2]], float(m[3])


def test_the_learning_rate_defaults_to_the_scaled_rate_and_a_typed_one_overrides_it(monkeypatch):
    started = []
    monkeypatch.setattr(runs, "start_run", lambda cfg, start_from_policy=False: started.append(cfg))
    at = ppo_page(steps=3)
    expected = default_lr(sample_trainable())
    lr_input = at.number_input(key=K.PPO_LR)
    assert lr_input.value is None and lr_input.proto.placeholder == f"{expected:.1e}"
    assert f"{sample_trainable():,} trainable parameters" in lr_input.help
    assert any(f"Learning rate {expected:.1e} (scaled to the model's size)" in shown(c.value) for c in at.caption)
    clean(click(at, "Start"))
    assert started[-1].lr == expected and started[-1].max_new_tokens == at.number_input(key=K.PPO_MAX_NEW).value
    clean(at.number_input(key=K.PPO_LR).set_value(1e-5).run())
    clean(click(at, "Start"))
    assert started[-1].lr == pytest.approx(1e-5)


def test_an_estimated_run_time_is_shown_and_grows_with_steps_and_batch():
    at = ppo_page(steps=10, batch=4)
    total, per_step = estimate_of(at)
    assert per_step > 0 and total == pytest.approx(10 * per_step, rel=0.1, abs=1)
    clean(at.number_input(key=K.PPO_STEPS).set_value(1000).run())
    more_steps, same_step = estimate_of(at)
    assert same_step == per_step and more_steps > 50 * total
    clean(at.number_input(key=K.PPO_BATCH).set_value(8).run())
    _, bigger_batch = estimate_of(at)
    assert bigger_batch > 1.5 * per_step  # twice the tokens per step
    clean(at.number_input(key=K.PPO_MAX_NEW).set_value(64).run())
    assert estimate_of(at)[1] > bigger_batch


def test_a_large_model_is_timed_by_its_analysis_worker_not_by_the_server(monkeypatch):
    """Above SERVER_PROBE_MAX_PARAMS the server never runs the model: the estimate waits for the time the
    pair's analysis worker measured before sampling (klviz.analysis_job), and is computed from it."""
    from klviz.app import data, guard
    from klviz.ppo import estimate
    from klviz.ppo.config import PPOConfig

    monkeypatch.setattr(estimate, "SERVER_PROBE_MAX_PARAMS", 0)  # the sample model counts as large here

    def no_probe_here(*a, **k):
        raise AssertionError("the server process timed the model")

    monkeypatch.setattr(estimate, "probe_seconds_per_token", no_probe_here)
    at = clean(app(**FEW_PROMPTS, **{K.PPO_STEPS: 10, K.PPO_BATCH: 4}).run())  # not the shipped view: a worker
    store, spec = guard._analyses(), data.pair_spec(current(at))
    deadline = time.monotonic() + 60
    while guard.forward_seconds_per_token(spec) is None and time.monotonic() < deadline:
        time.sleep(0.1)  # sent by the worker before its table; delivered by its reader thread
    measured = guard.forward_seconds_per_token(spec)
    assert measured is not None and measured > 0
    with store.lock:
        del store.probes[guard._probe_key(spec)]  # as while the worker is still timing it
    clean(at.switch_page("pages/live_ppo.py").run())
    assert not any("Estimated run time: about" in shown(c.value) for c in at.caption)
    assert any("once the pair's analysis has timed one forward pass" in shown(c.value) for c in at.caption)
    with store.lock:
        store.probes[guard._probe_key(spec)] = measured
    _, per_step = estimate_of(clean(at.run()))
    prompt_tokens = runs._prompt_tokens.__wrapped__(  # the page's prompts, as the page tokenizes them
        "", tuple(runs.prompt_text(p) for p in data.prompts(for_training=True)), current(at).pair.tokenizer)
    want = estimate.estimate_run(measured, 10, 4, prompt_tokens, at.number_input(key=K.PPO_MAX_NEW).value,
                                 PPOConfig.ppo_epochs).step_s
    assert per_step == pytest.approx(want, rel=0.05)  # the page prints 2 significant digits


def sent_so_far() -> list[tuple[tuple, str]]:
    """(delta path, element) of everything this script run has sent to the browser so far."""
    runner = get_script_run_ctx()._enqueue.__self__  # AppTest's LocalScriptRunner
    out = []
    for m in runner.forward_msgs():
        if m.HasField("delta") and m.delta.HasField("new_element"):
            element = m.delta.new_element
            proto = getattr(element, element.WhichOneof("type"))
            out.append((tuple(m.metadata.delta_path), shown(getattr(proto, "body", ""))))  # alert, markdown
    return out


def test_while_a_pair_loads_the_page_and_the_sidebar_say_so(monkeypatch):
    seen = []
    real = models.load_pair

    def slow_load(*args, **kwargs):  # what the browser shows while a real pair loads
        seen.extend(sent_so_far())
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "load_pair", slow_load)
    at = app(**FEW_PROMPTS)  # not the shipped default view: the pair loads in this run
    at.switch_page("pages/live_ppo.py")
    clean(at.run())
    label = current(at).source.label
    loading = [path for path, element in seen if f"Loading {label}" in element]
    main = [p for p in loading if p[0] == 0]
    # Under the page's title, where "Choose a pair in the sidebar" stood before (replacing it), and in the sidebar.
    assert main == [(0, 1)] and any(p[0] == 1 for p in loading)
    assert not any("Choose a pair" in element for _, element in seen)
    texts = [shown(e.value) for e in at.info] + [shown(c.value) for c in [*at.caption, *at.sidebar.caption]]
    assert not any("Loading" in t for t in texts)  # both notes cleared once it has loaded
    assert any("Running on cpu" in shown(c.value) for c in at.sidebar.caption)


def test_choose_a_pair_only_when_none_is_chosen(tmp_path):
    at = app(**{K.PAIR: sidebar.LOCAL, K.POLICY_PATH: "", K.SFT_PATH: ""})
    at.switch_page("pages/live_ppo.py")
    clean(at.run())
    assert current(at).source is None
    assert "Choose a pair in the sidebar." in [shown(i.value) for i in at.info]
    assert not any("Loading" in shown(c.value) for c in at.sidebar.caption)
