"""AppTest of the "Where RL acted" page: its figures on the shipped table, RL's Razor on SFT
samples, and a largest-KL position opened in the Token inspector."""

import pytest

from klviz import shipped_view
from klviz.pairs import sample_file
from klviz.views import acted
from klviz.views.plots import KL_FORWARD, KL_REVERSE
from tests.app import test_pages
from tests.app.test_pages import FEW_PROMPTS, K, app, charts, clean, current, shown

_fresh = test_pages._fresh  # its autouse fixture: fresh caches and upload folders per test

PAGE = "pages/where_rl_acted.py"


def _metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def test_page_on_the_shipped_table():
    at = clean(app().run().run())
    clean(at.switch_page(PAGE).run())
    assert at.title[0].value == "Where RL acted"
    labels = [t.label for t in at.tabs]
    assert len(labels) == 4 and len(charts(at)) == 1  # the open tab's chart alone
    for label in labels[1:]:  # as a click does: the page reruns with that tab open
        at.session_state[K.ACTED_VIEW] = label
        clean(at.run())
        assert len(charts(at)) == 1 and label in charts(at)[0].key
    table = shipped_view.read_warm_table(sample_file(shipped_view.WARM_TABLE), current(at).shipped_key)
    want = acted.where_rl_acted(table, "policy")
    got = _metrics(at)
    assert got["unshifted (SFT rank 1)"] == f"{want['token_shift']['unshifted']:.1%}"
    assert got[f"Share of {KL_REVERSE}"] == f"{want['forking']['share_kl_reverse']:.1%}"
    assert got[f"Share of {KL_FORWARD}"] == f"{want['forking']['share_kl_forward']:.1%}"
    assert got["SFT entropy threshold"] == f"{want['forking']['entropy_sft_threshold']:.3f} nats"
    spikes = at.dataframe[0].value
    assert len(spikes) == acted.SPIKES
    assert list(spikes[f"{KL_REVERSE}, nats"]) == pytest.approx(list(want["spikes"]["kl_reverse"]))
    assert any("RL's Razor reads SFT samples" in i.value for i in at.info)  # policy samples only


def test_rl_razor_on_sft_samples_and_a_spike_opens_in_the_inspector():
    at = app(**FEW_PROMPTS, **{K.SAMPLE_FROM: "both"})
    clean(at.run())
    clean(at.switch_page(PAGE).run())
    label = f"Mean {KL_FORWARD} per SFT-sampled response"
    assert _metrics(at)[label].endswith(" nats per sequence")
    at.session_state[K.ACTED_SOURCE] = "sft"  # SFT samples alone: no token shift, so no tab for it
    clean(at.run())
    assert any("No policy-sampled tokens" in i.value for i in at.info)
    assert [t.label for t in at.tabs] == ["Forking positions' share of KL", "Entropy change per token"]
    assert len(charts(at)) == 1 and "Forking" in charts(at)[0].key
    at.session_state[K.ACTED_SOURCE] = "both"
    clean(at.run())
    spike = at.dataframe[0].value.iloc[3]
    # What a click on the row does (AppTest cannot click a dataframe row): the inspector's keys.
    for key, col in ((K.INSPECT_SOURCE, "samples from"), (K.INSPECT_PROMPT, "prompt"), (K.INSPECT_SAMPLE, "sample")):
        at.session_state[key] = spike[col]
    at.session_state[K.INSPECT_POSITION] = int(spike["position"])
    clean(at.switch_page("pages/token_inspector.py").run())
    assert shown(at.subheader[0].value).startswith(f"Position {int(spike['position'])}:")
