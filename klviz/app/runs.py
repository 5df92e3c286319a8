"""Live PPO glue: a session's run book, the server-wide job cap, starting and saving runs.

Training runs in klviz.ppo.jobs; this module only starts, stops and reads it. A session's runs live
in a session-scoped st.cache_resource, so they stop when the browser tab goes away.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import streamlit as st

from klviz import pairs
from klviz.app import data, guard
from klviz.app.keys import Keys
from klviz.app.view import current
from klviz.errors import KlvizError
from klviz.pairs import SavedPolicy
from klviz.ppo.runbook import Run, RunBook
from klviz.prompts import prompt_text

if TYPE_CHECKING:
    import pandas as pd

MAX_JOBS = 2  # PPO jobs running at once on one server; they share its cores (klviz.ppo.jobs.share_threads)
REFRESH_S = 1.0  # Live PPO's step-and-state poll while a job runs (pages/live_ppo.py); at 0.4 s the run watched
# on its page trained at 77% of the CLI's rate, at 1.0 s at 90% (bench/live.py, bench/RESULTS.md)
CHARTS_EVERY_S = 2.0  # and its charts' redraw interval


def _release_runs(book: RunBook) -> None:
    book.stop_all()


@st.cache_resource(scope="session", on_release=_release_runs, show_spinner=False)
def runbook() -> RunBook:
    """This browser session's runs; released (and every run stopped) when the session disconnects."""
    from klviz.views.style import MAX_RUNS

    return RunBook(MAX_RUNS)


@st.cache_resource(show_spinner=False)
def job_registry():
    """The server-wide cap on running PPO jobs (shared by every session)."""
    from klviz.ppo.jobs import JobRegistry

    return JobRegistry(max_jobs=MAX_JOBS)


def session_id() -> str:
    import uuid

    return st.session_state.setdefault(Keys.SESSION, uuid.uuid4().hex)


def start_run(cfg, start_from_policy: bool = False) -> Run:
    """Start a PPO job on a copy of the current pair's SFT model (or its policy); KlvizError when the
    server is full or the settings are invalid. The cached models are only read (PPO trains a copy)."""
    from klviz.ppo.jobs import ModelSpec
    from klviz.ppo.losses import ESTIMATOR_METRIC

    data.require_pair()  # a loaded, checked pair; the worker loads its own copies from their paths
    cur, book = current(), runbook()
    if book.any_running():
        raise KlvizError("A PPO run is already training in this tab: stop it before starting another.")
    texts = [prompt_text(p) for p in data.prompts(for_training=True)]  # a chat prompt trains as its messages' text
    book.count += 1
    name = f"#{book.count} {cfg.kl_estimator} in {cfg.kl_placement}, β={cfg.kl_coef:g}"
    if cfg.target_kl is not None:
        name += f"→KL {cfg.target_kl:g}"
    src = cur.source
    sft = ModelSpec(pairs.resolve(src.sft), dtype=cur.dtype)
    init = (ModelSpec(pairs.resolve(src.policy), base=pairs.resolve(src.policy_base) if src.policy_base else None,
                      dtype=cur.dtype) if start_from_policy else None)
    job = job_registry().start(session_id(), sft, texts, cfg, policy_init=init, allow_code=guard.code_allowed())
    run = Run(name, job, cur.source.sft, ESTIMATOR_METRIC[cfg.kl_estimator])
    book.add(run)
    return run


def save_run(run: Run) -> SavedPolicy:
    """Save a run's policy and list it in the sidebar's pair picker (selected on the next run)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", run.name).strip("_")
    path = run.job.save(pairs.SAVED_ROOT / session_id() / f"{slug}_{time.strftime('%H%M%S')}")
    saved = SavedPolicy(f"PPO {run.name} vs its SFT", str(path), run.sft)
    st.session_state.setdefault(Keys.SAVED, {})[saved.label] = saved
    st.session_state[Keys.PENDING_PAIR] = saved.label
    return saved


def ppo_bands(run: Run, snap) -> tuple[int, pd.DataFrame] | None:
    """(step, band frame per token) of the newest mass-moved record of a run's snapshot, or None.

    The job records band sums over the rollout's response tokens; their number is the step's
    mean response length (EOS included) times the batch size.
    """
    from klviz.views import tables

    if not snap.bands:
        return None
    record = snap.bands[-1]
    lengths = {m["step"]: m.get("response_len") for m in snap.metrics}
    n_tokens = (lengths.get(record["step"]) or 0) * run.job.cfg.batch_size
    return record["step"], tables.bands_from_ppo({**record, "n_tokens": n_tokens or None})


@st.cache_data(max_entries=8, show_spinner=False)
def _trainable(pair_key: str, _pair) -> int:
    from klviz.ppo.config import full_trainable_params

    return full_trainable_params(_pair.sft)  # PPO trains a copy of the SFT model (a policy has its shape)


def default_lr() -> tuple[float, int]:
    """(the learning rate a run of the current pair trains with when none is typed, its trainable
    parameters): klviz.ppo.config.default_lr, scaled to the model's size (the CLI's default too)."""
    from klviz.ppo.config import default_lr as scaled

    n = _trainable(current().pair_key, data.require_pair())
    return scaled(n), n


@st.cache_data(max_entries=8, show_spinner=False)
def _seconds_per_token(pair_key: str, _pair) -> float:
    # Three passes of klviz.ppo.estimate.PROBE_TOKENS tokens of a model of at most SERVER_PROBE_MAX_PARAMS
    # (the shipped pair: milliseconds), once per pair and device; larger ones are timed by their worker.
    from klviz.ppo.estimate import probe_seconds_per_token

    return probe_seconds_per_token(_pair.sft)


def _measured_seconds_per_token(pair_key: str, pair) -> float | None:
    """The SFT model's forward seconds per token: as the pair's analysis worker timed it, or timed here for a
    model small enough to cost milliseconds; None until the worker has (heavy work stays out of the server)."""
    from klviz.ppo.estimate import SERVER_PROBE_MAX_PARAMS

    seconds = guard.forward_seconds_per_token(data.pair_spec(current()))
    if seconds is None and _trainable(pair_key, pair) <= SERVER_PROBE_MAX_PARAMS:
        seconds = _seconds_per_token(pair_key, pair)
    return seconds


@st.cache_data(max_entries=16, show_spinner=False)
def _prompt_tokens(pair_key: str, texts: tuple, _tokenizer) -> float:
    return sum(len(_tokenizer(t).input_ids) for t in texts) / max(1, len(texts))


def estimate(steps: int, batch_size: int, max_new_tokens: int):
    """klviz.ppo.estimate.RunEstimate of a run with these settings (PPOConfig's ppo_epochs) on the
    current pair, its prompts and its device; None while its forward pass has not been timed yet."""
    from klviz.ppo.config import PPOConfig
    from klviz.ppo.estimate import estimate_run

    pair, key = data.require_pair(), current().pair_key
    seconds = _measured_seconds_per_token(key, pair)
    if seconds is None:
        return None
    texts = tuple(prompt_text(p) for p in data.prompts(for_training=True))
    return estimate_run(seconds, steps, batch_size, _prompt_tokens(key, texts, pair.tokenizer), max_new_tokens,
                        PPOConfig.ppo_epochs)


def warm(pair, pair_key: str) -> None:
    """Fill the Live PPO page's model caches for a pair just loaded (its trainable parameters for the
    learning rate; for a small model the timed forward pass of the run-time estimate), so its first visit
    does not pay. Takes the pair: the first view calls it from a fragment, where `data.require_pair` may
    not draw."""
    from klviz.ppo.estimate import SERVER_PROBE_MAX_PARAMS

    if _trainable(pair_key, pair) <= SERVER_PROBE_MAX_PARAMS:
        _seconds_per_token(pair_key, pair)


def count_poll() -> int:
    """Count this live-panel refresh (shown on the page; the browser benchmark reads it)."""
    st.session_state[Keys.PPO_POLLS] = st.session_state.get(Keys.PPO_POLLS, 0) + 1
    return st.session_state[Keys.PPO_POLLS]
