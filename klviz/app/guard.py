"""What the browser may reach, and heavy work kept out of the server process (issue 13).

- `user_path`: a path typed in the browser, resolved inside the allowed roots (klviz.paths) or a
  KlvizError naming what was typed.
- `upload_folder`: this session's unguessable upload folder (klviz.uploads), removed when the session
  ends; the first call on a server also cleans up what crashed servers left.
- `analysis_table`: the token table of a pair, sampled and scored (or a responses file scored) in a worker process
  (klviz.analysis_job) shared by every session that asks for the same key; while it runs the page
  shows its progress and reruns, drawing only.
- `code_allowed` / `reward_note`: whether the owner started the dashboard with --allow-code.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import streamlit as st

from klviz import pairs, paths, server_options, uploads
from klviz.errors import KlvizError

REPO = pairs.ROOT
SAMPLE_DIR = REPO / pairs.SAMPLE_DIR
POLL_S = 0.5
"""How often a page waiting for an analysis redraws its progress bar."""
MAX_TABLES = 16
"""Finished token tables kept on the server (the most recent)."""
NOT_ALLOWED_NOTE = ("module:function rewards and reward-model folders run code on the server: this dashboard "
                    "allows them only when its owner starts it with `--allow-code` "
                    "(`streamlit run app.py -- --allow-code`).")


def roots() -> paths.Roots:
    """The allowed roots: the working directory, sample_data/, the uploads folder, the owner's --data-root
    folders, and where PPO runs save their policies."""
    return paths.Roots.of(Path.cwd(), SAMPLE_DIR, pairs.UPLOAD_ROOT, pairs.SAVED_ROOT,
                          server_options.current().data_roots)


def user_path(typed: str, text_file: bool = False) -> str:
    """`typed` resolved (relative to the repository) inside the allowed roots; KlvizError naming it otherwise."""
    return str(roots().resolve(typed, REPO, text_file=text_file))


def code_allowed() -> bool:
    return server_options.current().allow_code


def reward_note() -> None:
    """A caption under a reward field saying how code rewards are enabled (only when they are not)."""
    if not code_allowed():
        st.caption(NOT_ALLOWED_NOTE)


# --- uploads ------------------------------------------------------------------------------------

@st.cache_resource(show_spinner=False)
def _cleaned_up(root: str) -> list:  # noqa: D401
    """Once per server: remove session folders that crashed servers left (klviz.uploads.cleanup)."""
    return uploads.cleanup(Path(root))


@st.cache_resource(scope="session", on_release=uploads.remove_folder, show_spinner=False)
def _session_upload_folder(root: str) -> Path:
    return uploads.session_folder(Path(root))


def upload_folder() -> Path:
    """This browser session's upload folder: unguessable, deleted when the session ends."""
    _cleaned_up(str(pairs.UPLOAD_ROOT))
    return _session_upload_folder(str(pairs.UPLOAD_ROOT))


# --- analysis in a worker -----------------------------------------------------------------------

class _Analyses:
    """Server-wide: running analysis jobs and finished tables, by table key."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running: dict[str, object] = {}
        self.tables: OrderedDict[str, object] = OrderedDict()
        self.probes: dict[tuple, float] = {}  # (SFT path, device, dtype) -> forward seconds per token

    def table(self, key: str):
        with self.lock:
            if key in self.tables:
                self.tables.move_to_end(key)
                return self.tables[key]
            return None

    def job(self, key: str, make: Callable[[], object]):
        with self.lock:
            if key not in self.running:
                self.running[key] = make().start()
            return self.running[key]

    def finish(self, key: str, table=None) -> None:
        with self.lock:
            self.running.pop(key, None)
            if table is not None:
                self.tables[key] = table
                while len(self.tables) > MAX_TABLES:
                    self.tables.popitem(last=False)


@st.cache_resource(show_spinner=False)
def _analyses() -> _Analyses:
    return _Analyses()


def _probe_key(pair_spec) -> tuple:
    return pair_spec.sft, pair_spec.device, pair_spec.dtype


def start_analysis(key: str, pair_spec, prompts: list, settings, responses: str | None = None):
    """The worker computing `key`'s table (as `analysis_table` describes), started now unless it runs already.
    Once it has loaded the pair it times the SFT model's forward: `forward_seconds_per_token` then has it."""
    from klviz.analysis_job import AnalysisJob

    store = _analyses()

    def probed(seconds: float) -> None:
        with store.lock:
            store.probes[_probe_key(pair_spec)] = seconds

    return store.job(key, lambda: AnalysisJob(pair_spec, prompts, settings, responses=responses, on_probe=probed))


def forward_seconds_per_token(pair_spec) -> float | None:
    """The SFT model's forward seconds per token as an analysis worker of this pair timed it (device and
    dtype as given; klviz.ppo.estimate), or None before any has."""
    store = _analyses()
    with store.lock:
        return store.probes.get(_probe_key(pair_spec))


def forget_analysis(key: str) -> None:
    """Drop `key`'s running worker, if any (its handle, once dropped, tells the task to stop)."""
    _analyses().finish(key)


def analysis_table(key: str, pair_spec, prompts: list, settings, explain: Callable[[str], str] = str,
                   responses: str | None = None):
    """The token table for `key`: from the server's finished tables, or computed by a worker (sampling from
    `prompts`, or scoring the `responses` file) while this run shows its progress and reruns every POLL_S
    (st.rerun). A failure is a KlvizError (explained)."""
    store = _analyses()
    table = store.table(key)
    if table is not None:
        return table
    job = start_analysis(key, pair_spec, prompts, settings, responses)
    snap = job.snapshot()
    if snap.state == "done":
        store.finish(key, snap.table)
        return snap.table
    if snap.state == "error":
        store.finish(key)
        if snap.oom:
            raise MemoryError(snap.error)  # user_errors shows the out-of-memory sentence
        raise KlvizError(explain(snap.error))
    what = "Scoring the responses file" if responses is not None else "Sampling and scoring"
    st.progress(min(max(snap.fraction, 0.0), 1.0), text=f"{what}… ({snap.stage})")
    time.sleep(POLL_S)
    st.rerun()
