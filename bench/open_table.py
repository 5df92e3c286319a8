"""Benchmark: the first chart of a 100k-row token table opened with `klviz dashboard TABLE` (no models).

The table is the shipped sample table (sample_data/dashboard_table.parquet, 1,170 rows) tiled with new
prompt ids to --rows rows, carrying the sample tokenizer's vocabulary map as `klviz score` writes it.
A fresh `klviz dashboard big.parquet` starts on a free loopback port; once /_stcore/health answers, Debian's
chromium (Playwright, as tests/e2e does) opens the page, and the time to the Overview's first drawn plotly
chart is taken, then again in a new session (cached table). Goal (issue 14): <= 3 s on the 2-core box.
command_to_first_chart_s adds the server's start: what a user who opens the page at once waits in all.

    python bench/open_table.py [--rows 100000]            # browser: first chart, fresh and new session
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
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.driver import CHROMIUM, CHROMIUM_ARGS, DRAWN, free_port  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
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
        n = make_table(tmp / "big.parquet", args.rows)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "klviz", "dashboard", str(tmp / "big.parquet"), "--port", str(port)],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_health(url, proc)
            health = time.perf_counter() - t0
            out = {"rows": n, "table_mb": round((tmp / "big.parquet").stat().st_size / 2**20, 1),
                   "server_health_s": round(health, 2)}
            with sync_playwright() as p:
                ctx = p.chromium.launch_persistent_context(str(tmp / "profile"), executable_path=str(CHROMIUM),
                                                           headless=True, args=CHROMIUM_ARGS,
                                                           viewport={"width": 1600, "height": 1100})
                tab = ctx.new_page()
                tab.set_default_timeout(120_000)
                for label in ("first_chart_fresh_s", "first_chart_new_session_s"):
                    start = time.perf_counter()
                    tab.goto(url)
                    # the Overview's own chart (its title shown), whether or not the script has finished
                    tab.wait_for_function(DRAWN, arg=["Overview", 1, False, None, False], polling="raf")
                    out[label] = round(time.perf_counter() - start, 2)
                out["command_to_first_chart_s"] = round(health + out["first_chart_fresh_s"], 2)
                ctx.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
    out["loadavg"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
