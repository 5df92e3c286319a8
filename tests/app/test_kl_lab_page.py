"""AppTest over pages/kl_lab.py: renders without exceptions, shows its widgets, charts and the claims,
and answers a bad edit with one st.error sentence instead of a traceback."""

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from klviz.lab import claims

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "kl_lab.py")
TIMEOUT = 60  # the first run imports plotly and evaluates the claims


@pytest.fixture(autouse=True)
def _clear_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


SECTIONS = ["Distributions", "Estimators", "Gradients", "Optima", "Claims"]


def _run(edit=None, kind="probabilities", section=None):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    if edit is not None:
        at.session_state[f"kl_lab.table.{kind}"] = {"edited_rows": edit, "added_rows": [], "deleted_rows": []}
    if section is not None:
        at.session_state["kl_lab.section"] = section
    return at.run()


def _open(at: AppTest, section: str) -> AppTest:
    """Select a tab, as a click does (the tabs rerun the page: only the open one is drawn)."""
    at.session_state["kl_lab.section"] = section
    return at.run()


def _charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def test_page_opens_on_the_distributions_and_draws_only_the_open_section():
    at = _run()
    assert not at.exception and not at.error
    assert at.title[0].value == "KL lab"
    assert [t.label for t in at.tabs] == SECTIONS
    assert at.radio(key="kl_lab.kind").value == "probabilities"
    assert at.data_editor(key="kl_lab.table.probabilities").value.shape == (5, 3)
    assert [m.label for m in at.metric] == ["KL(pi||SFT), reverse", "KL(SFT||pi), forward"]
    assert len(_charts(at)) == 1 and len(at.dataframe) == 1  # the editor; the other sections did not run


def test_every_section_shows_its_widgets_and_chart():
    at = _run()
    _open(at, "Estimators")
    assert not at.exception and at.select_slider(key="kl_lab.samples").value == 10_000
    assert len(_charts(at)) == 1 and {"case", "estimator", "true KL"} <= set(at.dataframe[-1].value.columns)
    _open(at, "Gradients")
    assert not at.exception and len(_charts(at)) == 1 and len(at.dataframe) == 2  # the editor and the gradients
    _open(at, "Optima")
    assert not at.exception and at.slider(key="kl_lab.beta").value == pytest.approx(0.2)
    assert len(_charts(at)) == 1 and not at.metric


def test_claims_section_shows_the_verdicts_and_one_claims_evidence():
    at = _open(_run(), "Claims")
    assert not at.exception and not _charts(at)
    expected = claims.evaluate_claims(0)
    shown = [df.value for df in at.dataframe if "holds" in df.value.columns][0]
    assert list(shown["id"]) == [c.id for c in expected]
    assert list(shown["holds"]) == [c.holds for c in expected]
    assert claims.format_claims(expected) in [t.value for t in at.text]
    box = at.selectbox(key="kl_lab.evidence")  # one claim's evidence at a time
    assert box.value == expected[0].id and json.loads(at.json[0].value) == expected[0].evidence
    box.set_value(expected[-1].id).run()
    assert not at.exception and json.loads(at.json[0].value) == expected[-1].evidence
    assert expected[-1].statement in [t.value for t in at.text]


def test_logits_mode_renders():
    at = _run()
    at.radio(key="kl_lab.kind").set_value("logits").run()
    assert not at.exception and not at.error
    assert at.data_editor(key="kl_lab.table.logits").value.shape == (5, 3)
    for section in SECTIONS[:4]:
        assert len(_charts(_open(at, section))) == 1, section


@pytest.mark.parametrize("edit, words", [
    ({0: {"policy": -0.5}}, "must all be positive"),
    ({i: {"sft": 0.0} for i in range(5)}, "must all be positive"),
    ({2: {"sft": None}}, "fill in the empty cell"),
])
def test_bad_edit_shows_one_sentence_error(edit, words):
    at = _run(edit)
    assert not at.exception
    assert len(at.error) == 1 and words in at.error[0].value
    assert at.error[0].value.count(". ") == 0
    assert len(_charts(at)) == 0 and at.info[0].value.startswith("Fix the table above")  # nothing drawn from it
    _open(at, "Claims")
    assert not at.exception and any("holds" in df.value.columns for df in at.dataframe)  # the claims still show
