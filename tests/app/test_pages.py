"""AppTest over the dashboard (app.py): every page on the shipped sample pair, the sidebar, uploads
of zipped tiny models (a good pair, an incompatible pair, a file that is no checkpoint), and the
Live PPO page's helpers (real runs: tests/app/test_live_ppo.py).

Also: local paths, out of memory, token text escaping, and .streamlit/config.toml. A user error must
end as one st.error sentence, never a traceback (at.exception stays empty).
"""

import html
import io
import re
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
import torch
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from klviz import pairs, sampling, settings, shipped_view
from klviz.app import feedback, first_view, sidebar
from klviz.app.keys import Keys
from klviz.app.view import View
from klviz.views.plots import KL_FORWARD, KL_REVERSE
from tests.helpers.tiny import make_tiny_model, make_tokenizer, save_model, save_pair

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
TIMEOUT = 120  # the first run imports torch/transformers and samples the sample pair on 2 CPU cores
K = Keys
FEW_PROMPTS = {K.N_PROMPTS: 4}  # pages other than the first test need only a few responses
PAGES = ("pages/token_inspector.py", "pages/mass_shift.py", "pages/live_ppo.py", "pages/kl_lab.py")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    """Empty caches and private upload/save folders per test; and keep AppTest on the st.navigation path.

    AppTest resets PagesManager.uses_pages_directory before every run, and since app.py sits beside
    a pages/ folder it is recomputed as True, so from the second run on AppTest would run the page
    file alone through the legacy pages-directory path, skipping app.py (its sidebar included).
    `streamlit run` decides once and st.navigation turns it off, so this only affects the tests.
    """
    st.cache_data.clear()
    st.cache_resource.clear()
    # (clearing st.cache_resource also empties the tried pairs: as on a fresh server, nothing loaded yet)
    monkeypatch.setattr(pairs, "UPLOAD_ROOT", tmp_path / "uploads")
    monkeypatch.setattr(pairs, "SAVED_ROOT", tmp_path / "saved")
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
    yield
    st.cache_resource.clear()  # releases the session run books: their jobs stop
    st.cache_data.clear()


def app(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def zipped(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(folder.rglob("*")):
            z.write(f, Path(folder.name) / f.relative_to(folder))
    return buf.getvalue()


def shown(markdown: str) -> str:
    """What a st.error/st.caption built with feedback.plain displays: backslash escapes and entities undone."""
    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


def allow_root(monkeypatch, *roots: Path, allow_code: bool = False) -> None:
    """As if the dashboard's owner had started it with --data-root ROOT ... (and --allow-code)."""
    from klviz import server_options

    opts = server_options.ServerOptions(data_roots=tuple(Path(r) for r in roots), allow_code=allow_code)
    monkeypatch.setattr(server_options, "current", lambda: opts)


def current(at: AppTest) -> View:
    return at.session_state[K.CURRENT]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


# ---- every page on the sample pair ------------------------------------------------------------

def test_every_page_renders_on_the_sample_pair():
    # Runs of a new session: the Overview's headline alone, then the sidebar and the rest (the
    # browser's next fragment run; AppTest: the next run), then the pair, loaded after them.
    at = clean(app().run().run().run())
    pair = at.selectbox(key=K.PAIR)
    assert pair.value == "Sample: policy vs SFT"
    assert "Sample: policy_k3_loss vs SFT" in pair.options
    assert {sidebar.LOCAL, sidebar.UPLOAD} <= set(pair.options)
    assert any("Running on cpu · float32" in c.value for c in at.sidebar.caption)
    captions = [shown(c.value) for c in at.sidebar.caption]
    assert any(c.startswith("policy: folder sample_data/policy,") for c in captions), captions
    assert not [c for c in captions if str(ROOT) in c], captions  # the repository's paths, relative
    assert at.text_input(key=K.PROMPTS).value == settings.DEFAULT_PROMPTS
    assert at.number_input(key=K.MAX_NEW_TOKENS).value == settings.DEFAULT_MAX_NEW_TOKENS
    assert at.number_input(key=K.SAMPLES).value == 4 and at.number_input(key=K.SEED).value == 0
    assert at.slider(key=K.TEMPERATURE).value == 1.0
    assert at.button_group(key=K.SAMPLE_FROM).value == "policy"
    assert at.title[0].value == "Overview"
    labels = [m.label for m in at.metric]
    assert labels[:5] == ["KL(policy || SFT), nats per token", "KL(SFT || policy), nats per token",
                          "Total variation per token (0 to 1)",
                          "KL(policy || SFT), nats per sequence", "KL(SFT || policy), nats per sequence"]
    assert all(float(m.value) >= 0 for m in at.metric[:5])
    assert len(charts(at)) == 1
    assert [d.label for d in at.download_button] == ["Token table (parquet)", "Token table (CSV)", "HTML report"]

    expected = {"pages/token_inspector.py": ("Token inspector", 2), "pages/mass_shift.py": ("Mass shift", 2),
                "pages/live_ppo.py": ("Live PPO", 0), "pages/kl_lab.py": ("KL lab", None)}
    for page in PAGES:
        title, n_charts = expected[page]
        clean(at.switch_page(page).run())
        assert at.title[0].value == title
        if n_charts is not None:
            assert len(charts(at)) == n_charts, page
        assert at.selectbox(key=K.PAIR).value == "Sample: policy vs SFT"  # the sidebar is on every page
    at.switch_page("pages/token_inspector.py").run()
    for key in (K.INSPECT_PROMPT, K.INSPECT_SAMPLE, K.INSPECT_QUANTITY):
        assert at.selectbox(key=key).options
    at.switch_page("pages/live_ppo.py").run()
    assert [b.label for b in at.button] == ["Start", "Stop", "Save policy"]
    assert metric(at, "Step") == "0"
    # The shipped table is shared by every session (st.cache_resource: klviz.app.view._read_warm), so no page
    # may change it: after every page has drawn it, it still equals the file.
    clean(at.switch_page("pages/where_rl_acted.py").run())
    key = current(at).shipped_key
    assert key is not None
    warm = current(at).warm_table()
    assert warm is current(at).warm_table()  # one frame, not a copy per call
    pd.testing.assert_frame_equal(warm, shipped_view.read_warm_table(ROOT / "sample_data" / shipped_view.WARM_TABLE, key))


def test_the_default_view_starts_from_the_shipped_table_and_still_loads_the_pair(monkeypatch):
    computed = []
    real = sampling.settings_table
    monkeypatch.setattr(sampling, "settings_table", lambda *a: computed.append(a) or real(*a))
    at = clean(app().run())
    # The first run: the Overview's headline alone (title, figures, the chart as a static image: klviz.views.svg,
    # while a blank chart preloads plotly.js), from the shipped view.
    assert computed == [] and len(at.metric) == 5 and [c.key for c in charts(at)] == [first_view.PRELOAD_KEY]
    assert len(at.get("image")) == 1 and at.get("image")[0].value[0].startswith("data:image/svg+xml;base64,")
    assert not at.sidebar.selectbox and not at.download_button and not at.selectbox  # the reward box comes next run
    view = shipped_view.read_warm_view(ROOT / "sample_data" / shipped_view.WARM_VIEW, current(at).shipped_key)
    assert metric(at, f"{KL_REVERSE}, nats per token") == f"{view['headline']['kl_reverse_per_token']:.4f}"
    assert metric(at, f"{KL_FORWARD}, nats per sequence") == f"{view['headline']['kl_forward_per_sequence']:.3f}"
    clean(at.run())  # its fragment's next run (AppTest: the next run): the sidebar and the rest of the page
    assert at.selectbox(key=K.PAIR).value == "Sample: policy vs SFT" and len(at.download_button) == 3
    assert not at.get("image") and [c.key for c in charts(at)] == ["overview.mass_moved"]  # the interactive chart
    assert [b.key for b in at.main.selectbox] == [K.OVERVIEW_REWARD]  # below the chart: nothing above it moves
    # The sidebar says which pair is loading (issue 16), not "Choose a pair"
    assert current(at).pair is None and "Loading Sample: policy vs SFT…" in [shown(c.value) for c in at.sidebar.caption]
    clean(at.run())  # the browser's next fragment run (AppTest: the next run) loads it, then reruns the app
    assert any("Running on cpu · float32" in c.value for c in at.sidebar.caption)
    assert current(at).pair is not None and computed == [] and len(charts(at)) == 1
    at.number_input(key=K.SEED).set_value(1).run()  # any other setting: sampled and scored...
    clean(at)
    assert computed == [] and len(charts(at)) == 1  # ...by a worker process (klviz.analysis_job), not this one


def test_second_shipped_pair_and_both_sources_on_mass_shift():
    at = app(**FEW_PROMPTS, **{K.PAIR: "Sample: policy_k3_loss vs SFT", K.SAMPLE_FROM: "both"})
    clean(at.run())
    assert current(at).source.policy == "sample_data/policy_k3_loss"
    clean(at.switch_page("pages/mass_shift.py").run())
    control = at.button_group(key=K.SHIFT_SOURCE)
    assert control.options == ["Policy samples", "SFT samples", "Both"]
    for choice in ("policy", "sft", "both"):
        clean(at.button_group(key=K.SHIFT_SOURCE).set_value(choice).run())
        assert len(charts(at)) == 2


SHIFT_VIEWS = ["KL by band", "SFT vs policy probability", "Tokens most gained and lost", "KL by position",
               "Sequence-level KL"]


def shift_views(at: AppTest):
    """Open each Mass shift tab in turn (as a click does: the page reruns with that tab open)."""
    for view in SHIFT_VIEWS:
        at.session_state[K.SHIFT_VIEW] = view
        yield view, clean(at.run())


def test_mass_shift_draws_the_headline_and_the_open_view_only():
    at = clean(app(**FEW_PROMPTS).run())
    clean(at.switch_page("pages/mass_shift.py").run())
    assert [t.label for t in at.tabs] == SHIFT_VIEWS
    headline = charts(at)[0].proto.spec
    specs = {}
    for view, at in shift_views(at):
        drawn = charts(at)
        assert len(drawn) == 2 and drawn[0].proto.spec == headline, view
        specs[view] = drawn[1].proto.spec
    assert len(set(specs.values())) == len(SHIFT_VIEWS)  # each tab its own chart
    assert [view for view, spec in specs.items() if "scattergl" in spec] == ["SFT vs policy probability"]


def test_overview_shows_the_mean_reward_of_each_source():
    at = clean(app(**FEW_PROMPTS, **{K.SAMPLE_FROM: "both", K.OVERVIEW_REWARD: "sentiment"}).run())
    labels = [shown(m.label) for m in at.metric]
    assert "Mean reward (sentiment), policy samples" in labels and "Mean reward (sentiment), sft samples" in labels
    at.selectbox(key=K.OVERVIEW_REWARD).set_value("other…").run()
    at.text_input(key=K.OVERVIEW_REWARD_OTHER).set_value("no-such-reward").run()
    assert not at.exception and "Unknown reward 'no-such-reward'" in shown(at.error[0].value)
    assert len(charts(at)) == 1  # the rest of the page still shows


def test_token_inspector_colours_by_each_quantity():
    at = app(**FEW_PROMPTS, **{K.SAMPLE_FROM: "both"})
    clean(at.run())
    clean(at.switch_page("pages/token_inspector.py").run())
    assert at.selectbox(key=K.INSPECT_SOURCE).options == ["policy", "sft"]
    for quantity in at.selectbox(key=K.INSPECT_QUANTITY).options:
        clean(at.selectbox(key=K.INSPECT_QUANTITY).set_value(quantity).run())
        assert len(charts(at)) == 2
    clean(at.selectbox(key=K.INSPECT_SOURCE).set_value("sft").run())
    clean(at.selectbox(key=K.INSPECT_SAMPLE).set_value(at.selectbox(key=K.INSPECT_SAMPLE).options[-1]).run())
    assert at.subheader[0].value.startswith("Position ")


def test_token_text_is_escaped(monkeypatch):
    from klviz.app import guard

    real = guard.analysis_table  # the table arrives from the analysis worker here (issue 13)
    evil = "<script>alert(1)</script>"

    def analysis_table(*args, **kwargs):
        return real(*args, **kwargs).assign(token=evil)

    monkeypatch.setattr(guard, "analysis_table", analysis_table)
    at = app(**FEW_PROMPTS)
    clean(at.run())
    clean(at.switch_page("pages/token_inspector.py").run())
    heading = at.subheader[0].value
    assert "<script>" not in heading
    assert shown(heading).endswith(f"{evil!r} (the largest KL(policy || SFT))")
    text = at.get("html")[0].proto.body  # the response as text, each token escaped once
    assert "&lt;script&gt;" in text and evil not in text and "&amp;lt;" not in text
    clean(at.switch_page("pages/mass_shift.py").run())
    for view, at in shift_views(at):
        assert all(evil not in c.proto.spec for c in charts(at)), view


# ---- uploads ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A tiny random GPT-2 pair: (policy folder, sft folder)."""
    return save_pair(tmp_path_factory.mktemp("tiny"), kind="gpt2")


@pytest.fixture(scope="module")
def tiny(tiny_dirs):
    """Zips of a tiny GPT-2 pair, and of an SFT model whose tokenizer has one more token."""
    policy, sft = tiny_dirs
    root = policy.parent
    tok = make_tokenizer(extra_tokens=("zzz",))
    other = save_model(make_tiny_model("gpt2", len(tok)), root / "other", tok)
    return {"policy": zipped(policy), "sft": zipped(sft), "other": zipped(other)}


def upload(tiny_files: dict, policy: str, sft: str, sft_name: str = "sft.zip") -> AppTest:
    at = app(**{K.PAIR: sidebar.UPLOAD, K.N_PROMPTS: 2})
    at.run()
    assert [f.label for f in at.file_uploader] == ["Policy checkpoint", "SFT checkpoint"]
    assert set(at.file_uploader[0].allowed_type) == {".zip", ".gguf"}
    at.file_uploader(key=K.POLICY_UPLOAD).set_value(("policy.zip", tiny_files[policy], "application/zip"))
    at.file_uploader(key=K.SFT_UPLOAD).set_value((sft_name, tiny_files[sft], "application/zip"))
    return at.run()


def test_zipped_tiny_pair_uploads_loads_and_is_analyzed(tiny):
    at = clean(upload(tiny, "policy", "sft"))
    cur = current(at)
    assert cur.source.label == "policy.zip vs sft.zip"
    assert cur.pair is not None and cur.pair.policy_info.kind.startswith("zip")
    assert len(at.metric) >= 5 and len(charts(at)) == 1
    captions = [shown(c.value) for c in at.sidebar.caption]
    assert any(c.startswith("policy: zip") and "policy.zip" in c for c in captions), captions
    assert not [c for c in captions if str(pairs.UPLOAD_ROOT) in c or str(ROOT) in c], captions  # no server path
    clean(at.switch_page("pages/mass_shift.py").run())
    assert len(charts(at)) == 2


def test_incompatible_upload_shows_the_library_sentence_and_the_app_stays_usable(tiny):
    at = upload(tiny, "policy", "other")
    assert not at.exception
    assert len(at.error) == 1
    message = shown(at.error[0].value)
    assert "differ" in message and "sft.zip" in message and "klviz-uploads" not in message
    assert shown(at.info[0].value).startswith("No pair is loaded")
    from klviz.app import guard

    assert guard._analyses().running == {}  # the worker started beside the failed load was dropped
    at.session_state[K.PAIR] = "Sample: policy vs SFT"  # pick another pair: the page works again
    clean(at.run())
    assert len(charts(at)) == 1


def test_a_bad_file_in_an_upload_is_named_in_it_and_only_that_upload_is_dropped(tiny, tiny_dirs, tmp_path):
    # A broken config.json in the policy's zip was named by where the zip was unpacked (a server path), so the
    # sidebar could not tell which upload was refused and dropped the good SFT upload too.
    broken = shutil.copytree(tiny_dirs[0], tmp_path / "policy")
    (broken / "config.json").write_text("{not json")
    at = upload({**tiny, "broken": zipped(broken)}, "broken", "sft")
    assert not at.exception and len(at.error) == 1
    message = shown(at.error[0].value)
    assert message.startswith("policy.zip/config.json is not valid JSON"), message
    assert "klviz-uploads" not in message and ".cache" not in message and str(pairs.UPLOAD_ROOT) not in message
    at.file_uploader(key=K.POLICY_UPLOAD).set_value(("policy.zip", tiny["policy"], "application/zip"))
    clean(at.run())  # the SFT upload was kept: the pair loads with only the policy uploaded again
    assert current(at).pair is not None and current(at).source.label == "policy.zip vs sft.zip"


def test_a_file_that_is_no_checkpoint_is_refused(tiny):
    at = upload({**tiny, "junk": b"not a zip at all"}, "policy", "junk", sft_name="weights.zip")
    assert not at.exception and len(at.error) == 1
    assert "weights.zip" in shown(at.error[0].value)


def test_local_paths_load_a_pair(tiny_dirs, monkeypatch):
    import klviz.models
    from klviz.app import guard

    policy, sft = tiny_dirs
    allow_root(monkeypatch, policy.parent)  # the owner's --data-root
    # The analysis worker starts before the server's own first load of the pair, so the two loads overlap.
    real, running = klviz.models.load_pair, []
    monkeypatch.setattr(klviz.models, "load_pair",
                        lambda *a, **k: running.append(list(guard._analyses().running)) or real(*a, **k))
    at = clean(app(**{K.PAIR: sidebar.LOCAL, K.POLICY_PATH: str(policy), K.SFT_PATH: str(sft), K.N_PROMPTS: 2}).run())
    assert current(at).source.label == "policy vs sft" and len(charts(at)) == 1
    assert running == [[current(at).table_key]]
    captions = [shown(c.value) for c in at.sidebar.caption]
    assert any(c.startswith(f"policy: folder {policy},") for c in captions), captions  # the path as typed


def test_out_of_memory_is_a_sentence_not_a_traceback(monkeypatch):
    import klviz.models
    import klviz.sampling

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    from klviz import analysis_job

    # The analysis runs in a worker process, where this test cannot patch analyze: the worker's report of
    # an out-of-memory error (tests/integration/test_analysis_job.py) is what the page gets.
    monkeypatch.setattr(analysis_job.AnalysisJob, "start", lambda self: self)
    monkeypatch.setattr(analysis_job.AnalysisJob, "snapshot",
                        lambda self: analysis_job.AnalysisSnapshot("error", 0.0, "sampling", oom=True))
    at = app(**FEW_PROMPTS).run()
    assert not at.exception and [shown(e.value) for e in at.error] == [feedback.OOM_SENTENCE]
    st.cache_resource.clear()
    monkeypatch.setattr(klviz.models, "load_pair", oom)
    at.session_state[K.DEVICE] = "cpu"  # another cache key: the pair is loaded again
    at.run()
    assert not at.exception and [shown(e.value) for e in at.error] == [feedback.OOM_SENTENCE]


def test_streamlit_config():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["toolbarMode"] == "minimal"
    assert config["server"]["headless"] is True and config["server"]["maxUploadSize"] >= 1024
    assert config["server"]["address"] == "127.0.0.1"  # loopback unless the owner shares it (README)
    assert config["runner"]["postScriptGC"] is False  # no full GC after every rerun (the GIL; bench/RESULTS.md)


def test_plain_shows_markup_as_text():
    shown = feedback.plain("<script>alert(1)</script> *bold* $x$ [a](b)")
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    for raw in ("*bold*", "$x$", "[a](b)"):
        assert raw not in shown


# ---- live PPO -----------------------------------------------------------------------------------

def ppo_page(steps: int, batch: int = 4) -> AppTest:
    """The Live PPO page with these settings; tests that stop a run ask for 2000 steps, the page's
    most, so that no machine is fast enough to finish it first."""
    at = app(**FEW_PROMPTS, **{K.PPO_STEPS: steps, K.PPO_BATCH: batch})
    clean(at.run())
    return clean(at.switch_page("pages/live_ppo.py").run())


def click(at: AppTest, label: str) -> AppTest:
    return next(b for b in at.button if b.label == label).click().run()
