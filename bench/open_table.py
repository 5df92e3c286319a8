"""Benchmark: the first chart of a 100k-row token table opened with `klviz dashboard TABLE` (no models).

The table is the shipped sample table (sample_data/dashboard_table.parquet, 1,170 rows) tiled with new
prompt ids to --rows rows, carrying the sample tokenizer's vocabulary map as `klviz score` writes it.
Each round (--rounds, default 3; medians reported) times, with Debian's chromium (Playwright, as tests/e2e
does), from navigating to the page to its first chart: klviz's first paint, the chart as a static image
(klviz.views.svg), or a drawn plotly chart, whichever shows first; and to its first drawn plotly chart
(`interactive_chart_*`), which replaces the image in the next run:
- the baseline: a bare Streamlit app drawing one 7-bar plotly chart (BARE_APP), fresh server, cold browser
  (a new profile): the floor of Streamlit + plotly.js on this machine, with no klviz and no table;
- `klviz dashboard big.parquet`, fresh server (started on a free loopback port, timed once its
  /_stcore/health answers), cold browser;
- the same on a second fresh server on the same port, with the browser that has opened klviz there
  before (Streamlit's and plotly's JavaScript in its cache, which is per origin: anyone who has used the
  dashboard at that address once);
- a new session on that server (table cached).
Goal (issue 14): first chart <= 3 s on the 2-core box. command_to_first_chart adds the server's start:
what a user who opens the page at once waits in all.

    python bench/open_table.py [--rows 100000] [--rounds 3] [--table big.parquet]
    python bench/open_table.py --steps [--table big.parquet]  # in-process: each step of the path, timed

--steps times, in a fresh process, what the server does before the Overview's first chart (the light read
of the scalar and band columns, the headline figures, the band totals; and, for comparison, the same from
the full read) and the other pages' first frames (mass shift, per sequence), with the load average beside
them; --table keeps (or reuses) the built table at that path (build it in an earlier run: building imports
pandas and transformers, and the import time is then not a fresh process's).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.driver import CHROMIUM, CHROMIUM_ARGS, DRAWN, STATIC_SHOWN, first_paint, free_port  # noqa: E402


def make_table(path: Path, rows: int) -> int:
    import pandas as pd
    from transformers import AutoTokenizer

    from klviz.io import write_table
    from klviz.tokentable import vocab_metadata

    base = pd.read_parquet(ROOT / "sample_data" / "dashboard_table.parquet")
    copies = -(-rows // len(base))
    df = pd.concat([base.assign(prompt_id=base["prompt_id"].astype(str) + f"#{k}") for k in range(copies)],
                   ignore_index=True).iloc[:rows]
    tok = AutoTokenizer.from_pretrained(str(ROOT / "sample_data" / "sft"))
    write_table(df, path, {"command": "score", "policy": "sample_data/policy", "sft": "sample_data/sft",
                           **vocab_metadata(df, tok)})
    return len(df)


def steps(path: Path) -> dict:
    """Seconds of each step the server takes between a table path and each page's first figures."""
    t0 = time.perf_counter()
    import pandas  # noqa: F401  (a fresh server's first session imports these)
    import pyarrow.parquet  # noqa: F401

    out: dict = {"import_pandas_pyarrow_s": time.perf_counter() - t0}
    from klviz.tokentable import read_light_table, read_token_table, table_decoder
    from klviz.views import tables

    def timed(name, fn, *a):
        start = time.perf_counter()
        result = fn(*a)
        out[name] = time.perf_counter() - start
        return result

    light = timed("read_light_table_s", read_light_table, path)  # what the sidebar and the Overview read
    timed("light_headline_s", tables.headline, light.frame)
    timed("light_band_means_s", tables.band_means, light.bands)
    out["overview_first_chart_s"] = out["read_light_table_s"] + out["light_headline_s"] + out["light_band_means_s"]
    df, meta = timed("read_token_table_s", read_token_table, path)  # the full frame, for the other pages
    decode = timed("table_decoder_s", table_decoder, df, meta)
    timed("headline_s", tables.headline, df)
    timed("band_totals_s", tables.band_totals, df)
    out["overview_from_full_read_s"] = out["read_token_table_s"] + out["headline_s"] + out["band_totals_s"]
    timed("per_sequence_s", tables.per_sequence, df)
    timed("mass_shift_s", tables.mass_shift, df, decode)
    timed("position_profile_s", tables.position_profile, df)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def wait_health(url: str, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit("klviz dashboard exited")
        time.sleep(0.2)
    sys.exit("no health")


BARE_APP = """import plotly.graph_objects as go
import streamlit as st

st.set_page_config(page_title="bare", layout="wide")
st.title("Overview")
st.plotly_chart(go.Figure(go.Bar(x=list("abcdefg"), y=[1, 2, 3, 4, 5, 6, 7]), layout_title_text="Mass moved"))
"""


def serve(cmd: list[str], port: int):
    """Start a server; (process, seconds until /_stcore/health answered)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_health(f"http://127.0.0.1:{port}", proc)
    return proc, time.perf_counter() - t0


def stop(proc, port: int) -> None:
    """Stop the server's process group and wait until its port is closed (`klviz dashboard` runs the
    server as a child, which can outlive the parent's exit by a moment)."""
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)


# Polled on every frame from the first paint on: the time the chart's place was blank (no static image, no
# drawn plotly chart) before the interactive chart drew; a frame is polled only while the page's thread is
# free, which is when a blank place would be painted.
BLANK = """([title, charts]) => {
  const now = performance.now(), w = window;
  const image = (%s)();
  const drawn = (%s)([title, charts, false, null, false]);
  if (w.__klvizLast !== undefined && !image && !drawn) w.__klvizBlank += now - w.__klvizLast;
  if (w.__klvizLast === undefined) w.__klvizBlank = 0;
  w.__klvizLast = now;
  return drawn ? {blank_ms: w.__klvizBlank} : false;
}""" % (STATIC_SHOWN, DRAWN)


def first_chart(tab, url: str, title: str) -> tuple[float, float, float]:
    """Seconds from navigating to `url` to (the first chart under `title`: the static first-paint image or a
    drawn plotly chart, whichever shows first; the first drawn plotly chart, the interactive one), and the
    seconds between the two when the chart's place was blank."""
    start = time.perf_counter()
    tab.goto(url)
    first_paint(tab, title)
    first = time.perf_counter() - start
    blank = tab.wait_for_function(BLANK, arg=[title, 1], polling="raf").json_value()["blank_ms"] / 1000
    return first, time.perf_counter() - start, blank


def one_round(p, table: Path, tmp: Path, k: int) -> dict:
    """One round: the bare baseline, then klviz with a cold browser, then klviz on a new server with the
    browser that has loaded klviz before, then a new session on that server."""
    out: dict = {}

    def browser(profile: Path):
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1600, "height": 1100})
        tab = ctx.new_page()
        tab.set_default_timeout(120_000)
        return ctx, tab

    port = free_port()  # the baseline: Streamlit and plotly alone, one chart, fresh server, cold browser
    (tmp / "bare.py").write_text(BARE_APP)
    proc, _ = serve([sys.executable, "-m", "streamlit", "run", str(tmp / "bare.py"), f"--server.port={port}",
                     "--server.address=127.0.0.1", "--server.headless=true", "--browser.gatherUsageStats=false"],
                    port)
    try:
        ctx, tab = browser(tmp / f"bare-profile-{k}")
        out["bare_streamlit_plotly_cold_s"] = first_chart(tab, f"http://127.0.0.1:{port}", "Overview")[1]
        ctx.close()
    finally:
        stop(proc, port)
    ctx, tab = browser(tmp / f"profile-{k}")  # one browser profile for the three klviz figures
    try:
        port = free_port()  # the same port for both servers: a browser's cache is per origin (host and port)
        for label in ("cold_browser", "warm_browser"):
            proc, health = serve([sys.executable, "-m", "klviz", "dashboard", str(table), "--port", str(port)], port)
            try:
                out[f"server_health_{label}_s"] = health
                first, interactive, blank = first_chart(tab, f"http://127.0.0.1:{port}", "Overview")
                out[f"first_chart_fresh_server_{label}_s"] = first
                out[f"interactive_chart_fresh_server_{label}_s"] = interactive
                out[f"blank_between_fresh_server_{label}_s"] = blank
                out[f"command_to_first_chart_{label}_s"] = health + first
                if label == "warm_browser":
                    first, interactive, blank = first_chart(tab, f"http://127.0.0.1:{port}", "Overview")
                    out["first_chart_new_session_s"], out["interactive_chart_new_session_s"] = first, interactive
                    out["blank_between_new_session_s"] = blank
                tab.goto("about:blank")  # the page would keep reconnecting to the stopped server
            finally:
                stop(proc, port)
    finally:
        ctx.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3, help="browser rounds (each: baseline, cold, warm, new session)")
    ap.add_argument("--steps", action="store_true", help="time each step in this process, no server or browser")
    ap.add_argument("--table", type=Path, help="build the table here (or reuse it if it exists)")
    args = ap.parse_args()
    if args.steps:
        path = args.table or Path(tempfile.mkdtemp()) / "big.parquet"
        if not path.exists():
            make_table(path, args.rows)
        out = {"uptime_before": os.getloadavg(), **steps(path), "uptime_after": os.getloadavg()}
        print(json.dumps(out, indent=1))
        return
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = args.table or tmp / "big.parquet"
        n = make_table(table, args.rows) if not table.exists() else None
        out: dict = {"rows": n or args.rows, "table_mb": round(table.stat().st_size / 2**20, 1),
                     "loadavg_before": os.getloadavg()}
        with sync_playwright() as p:
            rounds = [one_round(p, table, tmp, k) for k in range(args.rounds)]
        for key in rounds[0]:
            values = sorted(r[key] for r in rounds)
            out[key] = {"median": round(values[len(values) // 2], 2), "all": [round(v, 2) for v in values]}
        out["loadavg_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
