"""Choosing a step of a checkpoint series points the other pages at that checkpoint's rows: a series that
`klviz trajectory` writes from tiny checkpoints opens in the sidebar; a step chosen from the Trajectory page
(its chart click's request, klviz.app.data.point_at_step) or the sidebar's Checkpoint step makes the
Overview's headline figures those of that step's rows, computed here from the parquet in float64."""

import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from klviz.app import opened
from klviz.app.keys import Keys as K
from klviz.cli import main
from klviz.views.plots import KL_FORWARD, KL_REVERSE
from tests.app.test_pages import APP, TIMEOUT, _fresh, allow_root, charts, clean, shown  # noqa: F401
from tests.helpers.tiny import make_tiny_model, make_tokenizer, perturbed, save_model, save_pair

STEPS = (5, 20)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A trajectory table: three responses scored under checkpoint-5 and checkpoint-20 of a tiny run."""
    root = tmp_path_factory.mktemp("series")
    _, sft = save_pair(root, kind="llama")
    tok = make_tokenizer()
    sft_model = make_tiny_model("llama", len(tok), seed=0)
    for step, scale in zip(STEPS, (0.1, 0.4)):
        save_model(perturbed(sft_model, scale=scale, seed=step), root / "out" / f"checkpoint-{step}", tok)
    inp = root / "in.jsonl"
    inp.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in
                           [("the food was", " very good"), ("the room", " and the staff"), ("the", " food")]))
    out = root / "series.parquet"
    assert main(["trajectory", "--sft", str(sft), "--checkpoints", str(root / "out"), "--input", str(inp),
                 "--out", str(out)]) == 0
    return out


def expected_metrics(rows: pd.DataFrame) -> dict[str, str]:
    """The Overview's figures of these rows, from the parquet in float64, formatted as the page formats them."""
    seq = rows.groupby(["prompt_id", "sample_id"])[["kl_reverse", "kl_forward"]].sum()
    return {f"{KL_REVERSE}, nats per token": f"{rows['kl_reverse'].astype('float64').mean():.4f}",
            f"{KL_FORWARD}, nats per token": f"{rows['kl_forward'].astype('float64').mean():.4f}",
            f"{KL_REVERSE}, nats per sequence": f"{seq['kl_reverse'].astype('float64').mean():.3f}",
            f"{KL_FORWARD}, nats per sequence": f"{seq['kl_forward'].astype('float64').mean():.3f}",
            "Total variation per token (0 to 1)": f"{rows['tv'].astype('float64').mean():.4f}"}


def overview_metrics(at: AppTest) -> dict[str, str]:
    clean(at.switch_page("pages/overview.py").run())
    return {shown(m.label): m.value for m in at.metric}


def test_choosing_a_step_points_the_overview_at_its_rows(series, monkeypatch):
    df = pd.read_parquet(series)
    allow_root(monkeypatch, series.parent)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[K.PAIR] = opened.OPEN_TABLE
    at.session_state[K.TABLE_PATH] = str(series)
    clean(at.run())
    assert at.selectbox(key=K.TABLE_STEP).options == [str(s) for s in STEPS]
    last = expected_metrics(df[df["step"] == STEPS[-1]])
    assert {k: v for k, v in overview_metrics(at).items() if k in last} == last  # the last step by default

    clean(at.switch_page("pages/trajectory.py").run())
    assert len(charts(at)) == 2
    at.session_state[K.PENDING_STEP] = STEPS[0]  # what a click on the chart's point at step 5 asks for
    clean(at.run())
    assert at.selectbox(key=K.TABLE_STEP).value == STEPS[0]
    assert any(f"Showing step {STEPS[0]} on the other pages" in shown(c.value) for c in at.caption)
    first = expected_metrics(df[df["step"] == STEPS[0]])
    assert first != last  # the two checkpoints differ, so the figures say which step is shown
    assert {k: v for k, v in overview_metrics(at).items() if k in first} == first
    assert any(f"at step {STEPS[0]}" in shown(c.value) for c in at.caption)

    clean(at.selectbox(key=K.TABLE_STEP).set_value(STEPS[-1]).run())  # the sidebar's Checkpoint step
    assert {k: v for k, v in overview_metrics(at).items() if k in last} == last
