"""`python -m klviz.app.server run app.py ...`: streamlit's own command line (`klviz dashboard` starts the
dashboard with it), plus a thread that imports, while the server starts, what a fresh server's first
page would otherwise import in its first run: pandas and pyarrow (a token table), plotly, klviz's frames,
and streamlit's emoji and icon tables (st.set_page_config's page icon). No torch.

Only modules: nothing is read or computed, so nothing a session sees depends on when it arrives. Two
threads importing at once are not safe with libraries that peek at sys.modules (plotly found pandas
half-imported and the server died, 3 starts in 6), so the thread starts after streamlit's own imports,
and a session's first run waits for it (`wait`) before it imports anything. Streamlit sets sys.argv for
app.py after this thread starts, so nothing here may read klviz.server_options.
"""

from __future__ import annotations

import importlib
import threading

WARM_MODULES = ("numpy", "pyarrow", "pyarrow.parquet", "pandas", "plotly.graph_objects", "klviz.tokentable",
                "klviz.views.tables", "klviz.views.plots", "klviz.views.trajectory", "streamlit.emojis",
                "streamlit.material_icon_names")
"""Imported by the warm-up thread, in this order."""

_warming: list[threading.Thread] = []  # the server process's one warm-up thread, once started (`start`)


def warm() -> None:
    """Import WARM_MODULES (the first page's imports; none imports torch)."""
    for name in WARM_MODULES:
        importlib.import_module(name)


def start() -> None:
    """Start the warm-up thread (once per process)."""
    if not _warming:
        _warming.append(threading.Thread(target=warm, name="klviz-warm-imports", daemon=True))
        _warming[0].start()


def wait() -> None:
    """Return once the warm-up imports are done (at once when this server started without them)."""
    for thread in _warming:
        thread.join()


def main() -> None:
    from streamlit.web import bootstrap, cli  # noqa: F401  streamlit's imports first, on this thread alone
    from streamlit.web.server import server  # noqa: F401

    from klviz.app import server as this  # the module app.py imports, not this __main__ copy of it

    this.start()
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
