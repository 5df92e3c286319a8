"""The View: what one run of the app shows (pair, device, settings) and what follows from it, worked
out once per run: the pair's cache key, whether the shipped default view applies, the table's key.

The sidebar builds one per run (klviz.app.sidebar) and stores it under Keys.CURRENT; every page and
cache reads it through `current()`. The default view (sample pair, default settings, CPU float32)
starts from the files shipped with the sample data (klviz.shipped_view), read here without pandas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import streamlit as st

from klviz import shipped_view
from klviz.app import opened
from klviz.app.keys import Keys
from klviz.app.opened import TableSource
from klviz.pairs import PairSource, fingerprint, pair_key, resolve, sample_file
from klviz.settings import SamplingSettings

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ResponsesFile:
    """Responses to score instead of sampling ("Responses file" in the sidebar): any format klviz.rollouts reads."""

    path: str
    """The resolved file or folder on the server (inside the allowed roots, or this session's uploads)."""
    shown: str
    """How errors name it: the path as typed or the upload's name, never another server path."""
    fingerprint: str
    """klviz.paths.fingerprint of `path`: a changed file is scored again."""
    upload_id: str | None = None
    """The st.file_uploader file_id when it was uploaded (a refused upload is deleted at once)."""

    def explain(self, message: str) -> str:
        """`message` with the server path replaced by the user's name for the file."""
        return message.replace(self.path, self.shown)


@dataclass
class View:
    """One run's choice and what follows from it; the pair and its error are filled in once loaded."""

    source: PairSource | None = None
    """The pair chosen in the sidebar, or None until one is complete."""
    device: str = "auto"
    """The sidebar's device choice."""
    dtype: str = "auto"
    """The sidebar's weights dtype choice."""
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    """The sidebar's sampling settings."""
    pair_key: str = ""
    """klviz.pairs.pair_key of the source, device and dtype ("" without a source)."""
    shipped_key: str | None = None
    """The shipped default view's key when this is that view and its files match, else None."""
    shipped: dict | None = None
    """The Overview's figures of the shipped default view (klviz.shipped_view.read_warm_view), or None."""
    pair: object | None = None
    """The loaded Pair, once loaded this run."""
    error: str | None = None
    """The sentence shown when the pair failed to load."""
    status: object | None = None
    """The sidebar's placeholder for the pair's device line or error."""
    table: TableSource | None = None
    """An opened token table (no pair): every page but Live PPO draws it."""
    step: int | None = None
    """The checkpoint step shown, when the opened table is a series."""
    scoring_file: bool = False
    """The sidebar's choice: score a responses file instead of sampling from the prompts."""
    responses: ResponsesFile | None = None
    """The responses file to score (None until one is chosen, or when sampling)."""

    def warm_table(self) -> pd.DataFrame | None:
        """The shipped token table when this is the shipped default view, else None (reads pandas)."""
        if self.shipped_key is None:
            return None
        return _read_warm(sample_file(shipped_view.WARM_TABLE), self.shipped_key)

    @cached_property
    def table_key(self) -> str:
        """Names the token table: an opened table's (and step), the shipped default view's key, the pair's with
        the responses file (its path and content fingerprint), or the pair's with the sampling settings."""
        if self.table is not None:
            return opened.table_key(self.table, self.step)
        if self.scoring_file:
            r = self.responses
            return f"{self.pair_key}:responses:{r.path if r else ''}:{r.fingerprint if r else ''}"
        if self.warm_table() is not None:
            return f"warm:{self.shipped_key}"
        prompts_content = fingerprint(resolve(self.settings.prompts))
        return f"{self.pair_key}:{prompts_content}:{sorted(asdict(self.settings).items())}"


def make_view(source: PairSource | None, device: str = "auto", dtype: str = "auto",
              settings: SamplingSettings | None = None, scoring_file: bool = False,
              responses: ResponsesFile | None = None) -> View:
    """The View of this choice, with its pair key and the shipped default view (if it applies) worked out."""
    view = View(source, device, dtype, settings or SamplingSettings(), scoring_file=scoring_file,
                responses=responses)
    if source is not None:
        view.pair_key = pair_key(source, device, dtype)
    key = _find_shipped_key(view)
    view.shipped = None if key is None else _read_warm_view(sample_file(shipped_view.WARM_VIEW), key)
    view.shipped_key = key if view.shipped is not None else None
    return view


def current() -> View:
    """This run's View (an empty one before the sidebar has built it)."""
    return st.session_state.get(Keys.CURRENT) or View()


def _find_shipped_key(view: View) -> str | None:
    """The default view's key (klviz.shipped_view.warm_key) when `view` is that view, else None."""
    policy, sft = (sample_file(name) for name in shipped_view.WARM_PAIR)
    if (view.source is None or view.scoring_file or view.source.policy_base or view.settings != SamplingSettings()
            or (resolve(view.source.policy), resolve(view.source.sft)) != (policy, sft)
            or not shipped_view.runs_on_cpu_float32(view.device, view.dtype)):
        return None
    prompts = resolve(view.settings.prompts)
    hashes = lambda p: _content_hash(p, fingerprint(p))  # noqa: E731
    return shipped_view.warm_key(policy, sft, prompts, view.settings, hashes)


@st.cache_data(max_entries=8, show_spinner=False)
def _content_hash(path: str, fingerprint_: str) -> str:
    return shipped_view.content_hash(path)


@st.cache_resource(max_entries=2, show_spinner=False)
def _read_warm(path: str, key: str) -> pd.DataFrame | None:
    """Shared and never mutated, as klviz.app.opened's tables: st.cache_data unpickled this frame (its 12
    columns of per-row arrays) on every hit, 57 ms each on the 2-core box, one to several times in each run
    of every page on the shipped default view (server CPU; the page switches timed in the browser did not
    move measurably: bench/RESULTS.md)."""
    return shipped_view.read_warm_table(path, key)


@st.cache_data(max_entries=2, show_spinner=False)
def _read_warm_view(path: str, key: str) -> dict | None:
    return shipped_view.read_warm_view(path, key)
