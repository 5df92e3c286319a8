"""What the page and the sidebar say while a pair loads (issue 16: a SmolLM2 GGUF dequantized for
about a minute while the page still said "Choose a pair in the sidebar").

A browser keeps the previous run's elements, greyed, until this run replaces them; so the note goes
where the page asks for the pair (klviz.app.data.require_pair, right under the page's title, where
"Choose a pair" stood) and into the sidebar's status line, and both are cleared once it has loaded.
"""

from __future__ import annotations

import contextlib

import streamlit as st

from klviz.app.feedback import plain
from klviz.pairs import PairSource

CHOOSE = "Choose a pair in the sidebar."
"""Shown only when no pair is chosen (an incomplete choice: no path or upload yet)."""


def loading_text(source: PairSource) -> str:
    """e.g. "Loading My pair… (a .gguf is dequantized on its first load; later loads come from the model cache)"."""
    paths = (source.policy, source.sft, source.policy_base or "")
    shown = dict(source.shown)
    gguf = any(str(shown.get(p, p)).lower().endswith(".gguf") for p in paths)
    return f"Loading {source.label}…" + (" (a .gguf is dequantized on its first load; later loads come from "
                                         "the model cache)" if gguf else "")


@contextlib.contextmanager
def note(source: PairSource, status=None):
    """Show `loading_text` in the page here and at the top of `status` (the sidebar's placeholder, whose
    container the block then writes into) while the block runs; both notes are emptied afterwards."""
    text = plain(loading_text(source))
    page = st.empty()
    page.info(text, icon=":material/hourglass_top:")
    try:
        with (status.container() if status is not None else contextlib.nullcontext()):
            side = st.empty()
            side.caption(text)
            try:
                yield
            finally:
                side.empty()
    finally:
        page.empty()
