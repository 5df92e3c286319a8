"""`klviz dashboard`'s server process: `streamlit run`, plus a warm-up thread started with it.

    python -m klviz.app.serve APP.py [streamlit flags] -- [klviz flags]   # as `streamlit run` takes them

A fresh server spends its first session's run importing pandas, pyarrow and plotly and reading the
opened table; that run is what a user who opens the page at once waits for, after the browser's own
start. The warm-up thread does that work as soon as the server answers, while the browser loads
Streamlit's JavaScript (started with the server, it slowed the server's start by as much as it saved): it
imports those modules and klviz's app modules, reads the light part of each table given
on the command line into klviz.app.opened's st.cache_resource (the session's run then finds it there, or
waits on Streamlit's per-key compute lock, never reading twice), computes the Overview's figures of the
step the first view opens on (its st.cache_data: 0.1 s of the first run before), and builds the chart's
plotly figure once (plotly's validators). It never raises: anything it fails at is left for the session's
run, which reports it.
Figures: bench/RESULTS.md (bench/open_table.py).
"""

from __future__ import annotations

import logging
import sys
import threading
import time


WARM_UP = "klviz-warm-up"  # the thread's name
SERVER_WAIT_S = 60.0  # the warm-up gives up if the server has not started by then


def _server_started() -> bool:
    from streamlit.runtime import Runtime, RuntimeState

    return Runtime.exists() and Runtime.instance().state not in (RuntimeState.INITIAL, RuntimeState.STOPPING,
                                                                  RuntimeState.STOPPED)


def _not_from_warm_up(record: logging.LogRecord) -> bool:
    """Drop Streamlit's "missing ScriptRunContext" warning for the warm-up thread (the caches work without one)."""
    return record.threadName != WARM_UP


def warm(script_args: list[str]) -> None:
    """Once the server is up (after it answers, so its start is not slowed), import what a first session's
    run imports and read the given tables' light part. Never raises."""
    try:
        import streamlit.runtime.scriptrunner_utils.script_run_context as ctx

        ctx._LOGGER.addFilter(_not_from_warm_up)
        deadline = time.monotonic() + SERVER_WAIT_S
        while not _server_started():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        from klviz import server_options
        from klviz.app import first_view  # noqa: F401  (klviz's app modules, streamlit's elements)
        from klviz.app import opened
        from klviz.views import plots

        for source in opened.given_tables(server_options.parse(script_args)).values():
            steps = opened.steps(source)  # the step the first view opens on (klviz.app.first_view)
            _, bands = opened.overview(source, steps[-1] if steps else None)  # its figures, in the session's cache
            plots.mass_moved_figure(bands).to_plotly_json()
    except (Exception, SystemExit):  # noqa: BLE001  (bad flags: argparse exits; the session's run shows either)
        pass


def main() -> None:
    argv = sys.argv[1:]
    script_args = argv[argv.index("--") + 1:] if "--" in argv else []
    threading.Thread(target=warm, args=(script_args,), name=WARM_UP, daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", *argv]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
