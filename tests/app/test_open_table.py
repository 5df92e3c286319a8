"""A token table written by `klviz score` opens in the dashboard with no models: AppTest in a fresh
interpreter (so sys.modules shows what the app imported) opens it as `klviz dashboard TABLE` would (the
first run draws the Overview's headline and a static chart before the sidebar, as on the shipped view), visits
every page but Live PPO, and torch is never imported. A checkpoint series drives the Trajectory page."""

import json
import math
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from klviz.cli import main
from klviz.engine.columns import BAND_LABELS
from klviz.io import write_table
from tests.helpers.tiny import save_pair

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import base64, json, sys
    table = sys.argv[1]
    sys.argv = ["app.py", table]  # what `streamlit run app.py -- TABLE` (klviz dashboard TABLE) leaves
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest
    original = PagesManager.__init__
    def init(self, *a, **k):  # keep AppTest on app.py's st.navigation (see tests/app/test_pages.py)
        original(self, *a, **k)
        PagesManager.uses_pages_directory = False
    PagesManager.__init__ = init
    at = AppTest.from_file("app.py", default_timeout=120)
    at.run()
    out = {"pages": {}}
    def record(name):
        out["pages"][name] = {"exception": [e.value for e in at.exception], "error": [e.value for e in at.error],
                              "charts": len([c for c in at.get("plotly_chart") if c.key != "plotly-preload"]),
                              "preload": [c.key for c in at.get("plotly_chart")].count("plotly-preload"),
                              "images": [base64.b64decode(i.value[0].split(",", 1)[1]).decode() for i in at.get("image")],
                              "torch": "torch" in sys.modules,
                              "metrics": {m.label: m.value for m in at.metric}, "info": [i.value for i in at.info],
                              "sidebar": len(at.sidebar.selectbox)}
    record("first run")  # a new session's first run: the Overview's headline and static chart (klviz.app.first_view)
    at.run()  # its fragment's next run (AppTest: the next run): the sidebar, then the page
    record("overview")
    for page in ["pages/token_inspector.py", "pages/mass_shift.py", "pages/kl_lab.py",
                 "pages/trajectory.py", "pages/where_rl_acted.py", "pages/live_ppo.py"]:  # Live PPO imports torch
        at.switch_page(page)
        at.run()
        record(page)
    print("RESULT" + json.dumps(out))
""")


def _run_app(table: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(table)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT")), None)
    assert line, done.stderr[-3000:]
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("t")
    policy, sft = save_pair(root, kind="llama")
    inp = root / "in.jsonl"
    inp.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in
                           [("the food was", " very good"), ("the room", " and the staff was bad"), ("the", " food")]))
    out = root / "table.parquet"
    assert main(["score", "--policy", str(policy), "--sft", str(sft), "--input", str(inp), "--out", str(out)]) == 0
    return out


def first_run_draws_the_static_chart(got: dict, rows: pd.DataFrame) -> None:
    """A new session's first run: the headline and the mass-moved chart as a static image (klviz.views.svg)
    whose bars are the table's band means (float64, summed here), plotly.js preloading, no sidebar; the
    next run has the interactive chart instead."""
    first, overview = got["pages"]["first run"], got["pages"]["overview"]
    assert first["sidebar"] == 0 and first["exception"] == first["error"] == [], first
    assert first["charts"] == 0 and first["preload"] == 1 and len(first["images"]) == 1, first
    assert first["metrics"] == overview["metrics"] and overview["sidebar"] >= 1
    assert overview["charts"] == 1 and overview["images"] == [] and overview["preload"] == 0
    root = ET.fromstring(first["images"][0])
    for kind in ("gained", "lost"):
        column = rows[f"mass_{kind}_by_sft_bin"].tolist()
        want = {label: math.fsum(float(r[i]) for r in column) / len(column) for i, label in enumerate(BAND_LABELS)}
        drawn = {r.get("data-band"): float(r.get("data-value")) for r in root.iter("{http://www.w3.org/2000/svg}rect")
                 if r.get("class") == kind}
        assert drawn == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_a_scored_table_opens_without_torch(scored):
    got = _run_app(scored)
    df = pd.read_parquet(scored)
    for page in ("overview", "pages/token_inspector.py", "pages/mass_shift.py", "pages/kl_lab.py"):
        r = got["pages"][page]
        assert r["exception"] == [] and r["error"] == [], (page, r)
        assert r["charts"] >= 1 and r["torch"] is False, (page, r)
    first_run_draws_the_static_chart(got, df)
    head = got["pages"]["overview"]["metrics"]
    seq = df.groupby(["prompt_id", "sample_id"])["kl_reverse"].sum()
    assert head["KL(policy || SFT), nats per token"] == f"{df['kl_reverse'].mean():.4f}"
    assert head["KL(policy || SFT), nats per sequence"] == f"{seq.mean():.3f}"
    assert any("holds one checkpoint" in i for i in got["pages"]["pages/trajectory.py"]["info"]), got["pages"]["pages/trajectory.py"]
    assert any("needs a pair" in i for i in got["pages"]["pages/live_ppo.py"]["info"])
    acted = got["pages"]["pages/where_rl_acted.py"]
    assert acted["exception"] == acted["error"] == [] and acted["torch"] is False, acted
    assert any("this table has none" in i for i in acted["info"]), acted  # no sidebar control to point to


def test_a_series_draws_the_trajectory_page(scored, tmp_path):
    df = pd.read_parquet(scored)
    series = pd.concat([df.assign(checkpoint=f"checkpoint-{s}", step=s, kl_reverse=df["kl_reverse"] * (s / 10))
                        for s in (10, 20)], ignore_index=True)
    path = tmp_path / "series.parquet"
    from klviz.io import read_metadata

    write_table(series, path, read_metadata(scored))
    got = _run_app(path)
    r = got["pages"]["pages/trajectory.py"]
    assert r["exception"] == [] and r["error"] == [] and r["charts"] == 2 and r["torch"] is False, r
    first_run_draws_the_static_chart(got, series[series["step"] == 20])
    head = got["pages"]["overview"]["metrics"]  # the other pages show the last step's rows
    assert head["KL(policy || SFT), nats per token"] == f"{series[series['step'] == 20]['kl_reverse'].mean():.4f}"
