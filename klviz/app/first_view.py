"""The first view of a new browser session, in three phases, so its chart shows first:

1. Headline only. A new session on the Overview with the shipped default view (klviz.shipped_view)
   runs the page before the sidebar, from the shipped figures (no torch, no pandas), and ends the run
   after the headline (`headline_only`): the browser draws the title, figures and the chart, as a
   static image (`first_paint`, klviz.views.svg: no plotly.js to evaluate first); PRELOAD_AFTER_S later
   the run ends with a blank chart that has the browser load plotly.js. A server started on
   a token table does the same from the first table's light read (klviz.app.opened), and has no phase 3.
2. The rest, REST_SOON_S later: a fragment's next run reruns the whole app: sidebar, controls, the
   downloads, and the interactive chart in the image's place.
3. The pair, LOAD_SOON_S after that: another fragment's next run loads it (importing torch and
   transformers holds the interpreter for seconds), warms the other pages' caches and reruns.

Any other view loads its pair in the run itself (`load_pair`). Figures: bench/RESULTS.md.
"""

from __future__ import annotations

import contextlib
import time

import streamlit as st

from klviz.app import data
from klviz.app import opened
from klviz.app import runs
from klviz.app.feedback import plain
from klviz.app.loading import loading_text
from klviz.app.keys import Keys
from klviz.app.sidebar import given_pair, sidebar
from klviz.app.view import View, current, make_view
from klviz.errors import KlvizError
from klviz.pairs import SHIPPED_PAIRS, PairSource

REST_SOON_S = 1.0
"""Phase 2 follows the headline this long after (the browser's timer asks for it). It replaces the static chart
with the plotly one: sooner, and in a cold browser the replacement can arrive before plotly.js has been
evaluated, leaving the chart's place blank until it has (1.8 s, seen with 0.5 s in 1 of 4 cold loads; 0.2 s
also lost the static image). The browser's timer waits while plotly.js is evaluated, so 1.0 s left no gap in
the cold loads watched (bench/open_table.py reports any: blank_between_*); the interactive chart then comes
0.3-0.6 s after plotly.js is ready. It was 1.5 s while the first paint was the plotly chart itself."""
LOAD_SOON_S = 1.5  # phase 3: the pair loads this long after the page reached the browser


def run(page, default_page: bool) -> None:
    """app.py's body: the page and the sidebar, in the first view's order on a new session."""
    if start_warm(default_page):  # phase 1: the page first, from the shipped view
        page.run()
        load_pair(sidebar())
    else:
        view = sidebar()
        if first_load(view):  # the page loads it where it needs it, under its title (klviz.app.loading)
            page.run()
            load_pair(view)  # a page that did not need it: loaded after it, as before
        else:
            load_pair(view)
            page.run()


def first_load(view: View) -> bool:
    """True when the view's pair would load now for the first time on this server, outside the first
    view's deferred load: its note ("Loading …") must then replace what the page showed before (e.g.
    "Choose a pair in the sidebar" while the last path was being typed), so the page asks for it."""
    return (view.source is not None and view.shipped is None and view.pair is None
            and view.pair_key not in data.tried_pairs())


def start_warm(default_page: bool) -> bool:
    """True, after storing the default view as this run's View, when a new browser session opens
    on the default page (the Overview) and the shipped default view applies.

    The sidebar's widgets hold their defaults on a session's first run anyway, so the page can run
    before the sidebar is drawn.
    """
    if Keys.CURRENT in st.session_state or not default_page or any(k in st.session_state for k in Keys.SIDEBAR):
        return False
    if given_pair():  # the server opens on what it was given, not the sample
        return False
    if opened.given_tables():
        return _start_warm_table(next(iter(opened.given_tables().values())))
    label = next(iter(SHIPPED_PAIRS))
    view = make_view(PairSource(label, *SHIPPED_PAIRS[label]))
    if view.shipped is None:
        return False
    st.session_state[Keys.CURRENT] = view
    st.session_state[Keys.HEADLINE_ONLY] = True
    return True


def _start_warm_table(source: opened.TableSource) -> bool:
    """`start_warm` for a server started on a token table (`klviz dashboard TABLE`): the sidebar opens on
    the first given table (its last step for a series), so the Overview's headline and chart are drawn
    from its light read before the sidebar; a table that cannot be read goes the normal way (the sidebar
    shows its sentence)."""
    try:
        steps = opened.steps(source)
    except KlvizError:
        return False
    view = make_view(None)
    view.table, view.step = source, (steps[-1] if steps else None)
    st.session_state[Keys.CURRENT] = view
    st.session_state[Keys.HEADLINE_ONLY] = True
    return True


def first_paint() -> bool:
    """True in a new session's first run (`start_warm`): the Overview then sends its chart as a static
    image (klviz.views.svg), drawn without plotly.js, which the browser spends ~2 s evaluating; the
    interactive chart replaces it in the next run (phase 2)."""
    return bool(st.session_state.get(Keys.HEADLINE_ONLY, False))


def headline_only() -> None:
    """End a new session's first run here, after the default view's headline, when `start_warm` began it.

    What would arrive with the chart (sidebar widgets, page controls) is rendered while plotly.js is
    evaluated and delayed the first chart (bench/RESULTS.md); it follows REST_SOON_S later. The run
    ends, PRELOAD_AFTER_S after the headline, with a blank chart that has the browser load plotly.js
    meanwhile (`_preload_plotly`).
    """
    if st.session_state.pop(Keys.HEADLINE_ONLY, False):
        time.sleep(PRELOAD_AFTER_S)  # this session's script thread only: nothing else waits on it
        _preload_plotly()
        _rest_soon()
        st.stop()


PRELOAD_AFTER_S = 0.3
"""The blank chart that loads plotly.js is sent this long after the headline. Sent with it, the browser fetched
plotly's 4.7 MB chunk and parsed it beside the small chunks that draw the image and the figures (Streamlit
loads an element's code on its first use): in a cold browser on the 2-core box the image came 0.64-0.73 s after
the title, and 0.18-0.31 s after it with 0.3 s between them (the image 2.65-2.82 s after navigation against
2.98-3.21 s, three loads each; plotly.js drawn 0.2-0.3 s later: bench/RESULTS.md)."""
PRELOAD_KEY = "plotly-preload"
"""The preloading chart's key: Streamlit gives its element the class st-key-plotly-preload (browser tests
skip it when they count drawn charts)."""


def _preload_plotly() -> None:
    """A blank (one transparent point), 10-pixel (plotly's least), static plotly chart at the end of the first
    run: the browser fetches and evaluates plotly.js (~2 s) while it shows the static chart, not after the
    next run asks for the interactive one (which then came 4-5 s after the image: bench/open_table.py).
    Streamlit has no API to preload a component's code; its plotly element loads it on first render. Gone
    in the next run."""
    point = {"type": "scatter", "x": [0], "y": [0], "mode": "markers", "marker": {"opacity": 0}, "hoverinfo": "skip"}
    st.plotly_chart({"data": [point], "layout": {"height": 10, "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
                                            "xaxis": {"visible": False}, "yaxis": {"visible": False}}},
                    height=10, key=PRELOAD_KEY, config={"staticPlot": True, "displayModeBar": False})


def load_pair(view: View) -> None:
    """Load the view's pair in this run, or, on the shipped default view with a pair this server has
    not tried yet, LOAD_SOON_S after the page has reached the browser (phase 3)."""
    if view.source is None or view.shipped is None or view.pair_key in data.tried_pairs():
        data.ensure_pair()
    else:
        with view.status.container():
            _load_pair_soon()


def _timed_run(key: str) -> bool:
    """For a fragment with run_every: False when the run that draws it calls it (and noted under
    `key`), True on the fragment's own next run, which the browser asks for after the interval."""
    if st.session_state.pop(key, False):
        return True
    st.session_state[key] = True
    return False


@st.fragment(run_every=REST_SOON_S)
def _rest_soon() -> None:
    if _timed_run(Keys.REST_SOON):
        st.rerun()  # the whole app: the sidebar, then the page with its controls


@st.fragment(run_every=LOAD_SOON_S)
def _load_pair_soon() -> None:
    """Phase 3: load the pair on this fragment's next run, not in the run that sends the page
    (that kept the finished page from being sent for seconds; bench/RESULTS.md)."""
    if not _timed_run(Keys.LOAD_SOON):
        st.caption(plain(loading_text(current().source)))
        return
    cur = current()
    try:
        pair = data.load_pair_cached(cur)
    except Exception:  # shown, as one sentence, by the full run below (ensure_pair loads it again)
        data.tried_pairs().add(cur.pair_key)
    else:  # and what the next pages need, into the caches: a first page visit is faster
        with contextlib.suppress(KlvizError, OSError):  # the page that needs it shows any error
            data.all_prompts(cur.settings)
            runs.warm(pair, cur.pair_key)  # Live PPO's run-time estimate: one timed forward pass
            table = cur.warm_table()  # pandas; and the Mass shift page's frames of its default choice
            if table is not None and len(table):
                choice = data.shift_choices(table)[-1]
                data.mass_shift(data.shift_rows(table, choice), choice, pair)
                data.where_rl_acted(table, choice)  # that page's default choice too
        data.claim_verdicts()  # the KL lab's verdicts
    st.rerun()  # the whole app again: the sidebar and every page now have the pair
