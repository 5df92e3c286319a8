"""What the user reads when something goes wrong: one sentence via st.error, never a traceback."""

from __future__ import annotations

import contextlib
import html
import re
import sys
from typing import Iterator

import streamlit as st

from klviz.errors import KlvizError

OOM_SENTENCE = ("Out of memory: choose fewer prompts, fewer samples or fewer new tokens, "
                "or load the pair in bfloat16 on a GPU.")
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def plain(text: str) -> str:
    """Text for st.error/st.caption/st.markdown shown as typed: markdown, LaTeX and HTML escaped."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(str(text), quote=False))


def show_error(message: str) -> None:
    st.error(plain(message), icon=":material/error:")


def is_oom(err: BaseException) -> bool:
    """Out of memory: MemoryError, or torch's OutOfMemoryError (torch is loaded if it raised one)."""
    torch = sys.modules.get("torch")
    return isinstance(err, MemoryError) or (torch is not None and isinstance(err, torch.OutOfMemoryError))


@contextlib.contextmanager
def user_errors(stop: bool = False) -> Iterator[None]:
    """Show a KlvizError's sentence (or an out-of-memory note) with st.error instead of a traceback.

    With stop=True the script run ends there (the rest of the page needs what failed).
    """
    try:
        yield
    except KlvizError as e:
        show_error(str(e))
        if stop:
            st.stop()
    except Exception as e:
        if not is_oom(e):
            raise
        show_error(OOM_SENTENCE)
        if stop:
            st.stop()
