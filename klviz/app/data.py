"""The cached things pages draw from: the loaded pair, the prompts, the token table and its frames,
mean rewards, the KL lab's verdicts.

Caching follows Streamlit's own advice: a loaded pair is an `st.cache_resource` (shared by every
session, keyed by klviz.pairs.pair_key, never mutated: PPO trains a copy), a table or frame an
`st.cache_data` keyed by the View's table_key. torch and pandas are imported only when something
needs them, so the default view's chart is sent without either (bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import TYPE_CHECKING, Mapping

import streamlit as st

from klviz.app import guard, opened
from klviz.app.feedback import OOM_SENTENCE, is_oom, plain, show_error, user_errors
from klviz.app.keys import Keys
from klviz.app.view import View, current
from klviz.errors import KlvizError
from klviz.pairs import fingerprint, resolve
from klviz.prompts import prompt_text
from klviz.settings import SamplingSettings

if TYPE_CHECKING:
    import pandas as pd


class TriedPairs:
    """Keys of pairs this server has loaded (st.cache_resource holds them) or failed to load.

    Shared by every session's thread, hence the lock; the first view loads a pair late only when
    it is not in here (klviz.app.first_view)."""

    def __init__(self):
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self._keys.add(key)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._keys


@st.cache_resource(show_spinner=False)
def tried_pairs() -> TriedPairs:
    """The server's one TriedPairs, held by st.cache_resource rather than a module global."""
    return TriedPairs()


@st.cache_resource(max_entries=4, show_spinner="Loading the pair…")
def _load_pair(policy: str, sft: str, policy_base: str | None, device: str, dtype: str, content: str):
    """One shared Pair per (paths, device, dtype, content); `content` only keys the cache."""
    from klviz.models import load_pair

    pair = load_pair(policy, sft, device=device, dtype=dtype, policy_base=policy_base)
    tried_pairs().add(content)
    return pair


def load_pair_cached(view: View):
    """The view's Pair, from the shared cache when its files have not changed."""
    source = view.source
    base = resolve(source.policy_base) if source.policy_base else None
    return _load_pair(resolve(source.policy), resolve(source.sft), base, view.device, view.dtype, view.pair_key)


def ensure_pair():
    """Load the current pair (from the cache when its files have not changed) once per run, and show
    its device line, or its error, in the sidebar. Returns the Pair, or None."""
    cur = current()
    if cur.source is None or cur.pair is not None or cur.error:
        return cur.pair
    from klviz.app import loading

    if cur.pair_key in tried_pairs():  # cached (or failed before): no note
        where = cur.status.container() if cur.status is not None else contextlib.nullcontext()
    else:  # a first load (a .gguf dequantizes for a minute): say so in the page and the sidebar
        where = loading.note(cur.source, cur.status)
    with where:
        try:
            cur.pair = load_pair_cached(cur)
        except KlvizError as e:
            cur.error = cur.source.explain(str(e))
            from klviz.app.sidebar import discard_refused_uploads

            discard_refused_uploads(cur.source, cur.error)  # a refused upload is deleted at once
        except Exception as e:
            if not is_oom(e):
                raise
            cur.error = OOM_SENTENCE
        if cur.error:
            show_error(cur.error)
        else:
            st.caption(plain(f"Running on {cur.pair.device} · {str(cur.pair.dtype).removeprefix('torch.')}"))
            for info in (cur.pair.policy_info, cur.pair.sft_info):
                st.caption(plain(cur.source.explain(info.describe())))  # what the user gave, not server paths
    return cur.pair


def require_pair():
    """The loaded Pair, or a note in the page and the end of this run."""
    pair = ensure_pair()
    if pair is None:
        cur = current()
        if cur.table is not None:
            st.info("This page needs a pair of models: a token table alone cannot run it. Choose a pair in the sidebar.")
            st.stop()
        from klviz.app.loading import CHOOSE

        st.info("No pair is loaded: see the error in the sidebar." if cur.error else CHOOSE)
        st.stop()
    return pair


@st.cache_data(max_entries=8, show_spinner=False)
def _read_prompts(path: str, content: str) -> list:
    from klviz.prompts import read_prompts

    return read_prompts(path)


def all_prompts(settings: SamplingSettings) -> list:
    """Every prompt of the settings' prompts file (cached by path and the file's fingerprint)."""
    path = guard.user_path(settings.prompts, text_file=True)  # inside the allowed roots only
    try:
        return _read_prompts(path, fingerprint(path))
    except KlvizError as e:  # name the file as the user typed it, never the server's path
        raise KlvizError(str(e).replace(path, settings.prompts)) from None


def prompts(for_training: bool = False) -> list:
    """The sidebar's prompts (the first n when a number is set); stops the run with st.error if unreadable.

    A table or a responses file holds its own prompts, so the views get none from the prompts file; Live PPO
    (`for_training`) still trains on the prompts file's prompts while the views show a responses file."""
    if current().table is not None or (current().scoring_file and not for_training):
        return []
    with user_errors(stop=True):
        return _chosen_prompts(current().settings)


def _chosen_prompts(s: SamplingSettings) -> list:
    found = all_prompts(s)
    return found[: s.n_prompts] if s.n_prompts else found


def pair_spec(view: View):
    """Where an analysis worker loads the view's pair from (klviz.analysis_job)."""
    from klviz.analysis_job import PairSpec

    src = view.source
    return PairSpec(resolve(src.policy), resolve(src.sft), resolve(src.policy_base) if src.policy_base else None,
                    device=view.device, dtype=view.dtype)


def require_table() -> pd.DataFrame:
    """The token table of the current pair and settings (cached), or st.error and the end of this run."""
    cur = current()
    if cur.table is not None:
        _table_readable(cur)
        with user_errors(stop=True):
            return opened.rows(cur.table, cur.step)
    table = cur.warm_table()
    if table is not None:
        return table
    if cur.pair is None and cur.source is not None and cur.pair_key not in tried_pairs():
        _start_worker_first(cur)
        if ensure_pair() is None:  # the pair failed here (its sentence is shown): so would the worker
            guard.forget_analysis(cur.table_key)
    require_pair()
    if cur.scoring_file:
        return _scored_responses(cur)
    found = prompts()
    with user_errors(stop=True):  # sampled and scored in a worker process; this run draws its progress
        return guard.analysis_table(cur.table_key, pair_spec(cur), found, cur.settings, cur.source.explain)


def _start_worker_first(cur: View) -> None:
    """Before this server's first load of the pair (which the other pages need, and which blocks this run):
    start the analysis worker, which loads its own copy, so the two loads overlap instead of following each
    other (on SmolLM2 the server's load came first and the dashboard took 1.8x the CLI; bench/RESULTS.md).
    Nothing is started when the inputs are not ready: the run reports that after the pair's own checks."""
    if cur.scoring_file:
        r = cur.responses
        if r is not None:
            guard.start_analysis(cur.table_key, pair_spec(cur), [], cur.settings, responses=r.path)
        return
    with contextlib.suppress(KlvizError, OSError):
        guard.start_analysis(cur.table_key, pair_spec(cur), _chosen_prompts(cur.settings), cur.settings)


def _table_readable(cur: View) -> None:
    """A note in the page and the end of this run when the opened table could not be read."""
    if cur.error:
        st.info("The token table could not be read: see the error in the sidebar.")
        st.stop()


def _scored_responses(cur: View) -> pd.DataFrame:
    """The sidebar's responses file scored by the pair in a worker process (as `klviz score --input`); a
    bad file is one st.error naming it as the user gave it, and a refused upload is deleted."""
    from klviz.app.sidebar import discard_refused_responses

    r = cur.responses
    if r is None:
        st.info("Choose a responses file in the sidebar (a path or an upload), or sample from the prompts.")
        st.stop()
    with user_errors(stop=True):
        try:
            return guard.analysis_table(cur.table_key, pair_spec(cur), [], cur.settings,
                                        lambda m: r.explain(cur.source.explain(m)), responses=r.path)
        except KlvizError as e:
            discard_refused_responses(r, str(e))
            raise


def overview() -> tuple[dict, Mapping]:
    """The Overview's headline figures (`tables.headline`) and band totals (`tables.band_totals`).

    On the default view they come from the shipped view (klviz.shipped_view), so its chart is sent before
    pandas has loaded; for an opened table from its light read (klviz.app.opened); otherwise from the
    token table.
    """
    cur = current()
    if cur.shipped is not None:
        return cur.shipped["headline"], cur.shipped["bands"]
    if cur.table is not None:  # an opened table: from its light read (no list columns), once per table and step
        _table_readable(cur)
        with user_errors(stop=True):
            return opened.overview(cur.table, cur.step)
    from klviz.views import tables

    df = require_table()
    return tables.headline(df), tables.band_totals(df)


def decoder(pair=None):
    """token id -> text: from an opened table itself, else under the pair's tokenizer (memoized per pair)."""
    cur = current()
    if pair is None and cur.table is not None:
        return opened.decoder(cur.table)
    pair = pair if pair is not None else require_pair()
    return _decoders(id(pair.tokenizer), pair.tokenizer)


@functools.lru_cache(maxsize=8)
def _decoders(_tok_id: int, tokenizer):
    return functools.lru_cache(maxsize=None)(
        lambda i: tokenizer.decode([int(i)], clean_up_tokenization_spaces=False))


def sources_of(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["source"])) if "source" in df else []


def shift_choices(df: pd.DataFrame) -> list[str]:
    """The Mass shift page's sample choices: each source, and "both" when there are two (the default: last)."""
    sources = sources_of(df)
    return sources + (["both"] if len(sources) > 1 else [])


def shift_rows(df: pd.DataFrame, choice: str | None) -> pd.DataFrame:
    return df if choice in (None, "both") else df[df["source"] == choice]


@st.cache_data(max_entries=8, show_spinner=False)
def _mass_shift(table: str, choice: str | None, _rows: pd.DataFrame, _decode) -> dict[str, pd.DataFrame]:
    from klviz.views import tables

    return tables.mass_shift(_rows, _decode)


def mass_shift(rows: pd.DataFrame, choice: str | None, pair=None) -> dict[str, pd.DataFrame]:
    """`tables.mass_shift` of the current table's `rows` for `choice` (`shift_rows`), cached per table."""
    return _mass_shift(current().table_key, choice, rows, decoder(pair))


def view_caption(head: Mapping) -> str:
    """What the figures are of: the opened table (and step), or the pair and who sampled."""
    cur = current()
    counts = f"{head['n_sequences']} responses, {head['n_tokens']} tokens"
    if cur.table is not None:
        return f"{cur.table.shown}{'' if cur.step is None else f' at step {cur.step}'}: {counts}."
    if cur.scoring_file:
        return f"{cur.source.label}: {counts}, scored from {cur.responses.shown}."
    return f"{cur.source.label}: {counts}, sampled from {cur.settings.sample_from}."


def require_series() -> pd.DataFrame:
    """The opened checkpoint series (every step), or a note in the page and the end of this run."""
    cur = current()
    if cur.table is None or cur.error:
        st.info("This page draws a checkpoint series, a table written by `klviz trajectory`: open one in the "
                "sidebar (Open a token table…) or start `klviz dashboard series.parquet`.")
        st.stop()
    with user_errors(stop=True):
        df, _ = opened.read(cur.table)
    if not opened.series_steps(df):
        st.info("This table holds one checkpoint: `klviz trajectory` writes a series of several.")
        st.stop()
    return df


@st.cache_data(max_entries=4, show_spinner="Summarising the series…")
def _trajectory_frames(key: str, _df: pd.DataFrame) -> dict:
    from klviz.views import trajectory

    gained, lost = trajectory.band_by_step(_df)
    return {"steps": trajectory.by_step(_df), "gained": gained, "lost": lost, "moved": trajectory.most_moved(_df)}


def trajectory_frames(df: pd.DataFrame) -> dict:
    """klviz.views.trajectory's frames of the opened series (cached per table file)."""
    return _trajectory_frames(opened.table_key(current().table, None), df)


def point_at_step(step: int) -> None:
    """Show `step`'s rows on the other pages (the sidebar's Checkpoint step), from the next run on."""
    st.session_state[Keys.PENDING_STEP] = int(step)


@st.cache_data(max_entries=8, show_spinner=False)
def _where_rl_acted(table: str, choice: str | None, _df: pd.DataFrame) -> dict:
    from klviz.views import acted

    return acted.where_rl_acted(_df, choice)


def where_rl_acted(df: pd.DataFrame, choice: str | None) -> dict:
    """`acted.where_rl_acted` of the current table for `choice` (a source or "both"), cached per table."""
    return _where_rl_acted(current().table_key, choice, df)


@st.cache_data(max_entries=2, show_spinner=False)
def claim_verdicts(seed: int = 0) -> list:
    """`klviz.lab.claims.evaluate_claims(seed)`, cached: the KL lab's verdicts (seed 0: as `klviz claims`)."""
    from klviz.lab.claims import evaluate_claims

    return evaluate_claims(seed)


@st.cache_data(max_entries=16, show_spinner="Scoring rewards…")
def _mean_rewards(table: str, reward_name: str, _df, _tokenizer, _texts) -> dict:
    from klviz.views import tables
    from klviz.ppo.rewards import get_reward

    seq = tables.per_sequence(_df)
    scores = get_reward(reward_name, _tokenizer, allow_code=guard.code_allowed())([_texts.get(i, "") for i in seq["prompt_id"]],
                                                 list(seq["response"]))
    return seq.assign(reward=scores.numpy()).groupby("source", sort=False)["reward"].mean().to_dict()


def mean_rewards(df: pd.DataFrame, reward_name: str) -> dict[str, float]:
    """Mean reward of the sampled responses (prompt + response), by source; cached per table. A reward that
    runs code is refused (KlvizError) unless the owner started the dashboard with --allow-code."""
    from klviz.ppo.rewards import check_reward

    check_reward(reward_name, guard.code_allowed())
    texts = {str(p.id): prompt_text(p) for p in prompts()}
    pair = require_pair()
    return _mean_rewards(current().table_key, reward_name, df, pair.tokenizer, texts)
