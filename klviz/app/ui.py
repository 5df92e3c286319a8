"""Streamlit glue for the dashboard: session keys, cached loaders, the shared sidebar, errors, live runs.

The only klviz module that imports streamlit. Pages stay thin: they read widgets, call the helpers
here for the loaded pair and its token table, hand klviz.views.tables frames to klviz.views.plots, and draw.

Caching follows Streamlit's own advice: a loaded pair is an `st.cache_resource` (shared by every
session, keyed by resolved path and a fingerprint of the files' sizes and mtimes, never mutated: PPO
trains a copy), an analysis table an `st.cache_data` (keyed by the pair's key and the settings).
The default view (sample pair, default settings, CPU float32) starts from the table shipped with the
sample data (klviz.shipped_view), and its pair loads after the page is drawn.
A live PPO run lives in a session-scoped resource, so it stops when its browser tab goes away.
torch and pandas are imported only when something needs them, so the default view's chart is sent
without either.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import io
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Mapping

import streamlit as st

from klviz import shipped_view
from klviz.errors import KlvizError
from klviz.io import atomic_path, write_table
from klviz.prompts import prompt_text
from klviz.settings import SamplingSettings

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_PAIRS = {  # label -> (policy, sft), relative to the repository root
    "Sample: policy vs SFT": ("sample_data/policy", "sample_data/sft"),
    "Sample: policy_k3_loss vs SFT": ("sample_data/policy_k3_loss", "sample_data/sft"),
}
LOCAL, UPLOAD = "Local paths…", "Upload checkpoints…"
UPLOAD_TYPES = ("zip", "gguf")
UPLOAD_ROOT = Path(tempfile.gettempdir()) / "klviz-uploads"
SAVED_ROOT = Path(tempfile.gettempdir()) / "klviz-saved-policies"
SAMPLE_DIR = "sample_data"
OOM_SENTENCE = ("Out of memory: choose fewer prompts, fewer samples or fewer new tokens, "
                "or load the pair in bfloat16 on a GPU.")


class Keys:
    """Every st.session_state key the app uses (widget keys included), defined once."""

    CURRENT = "app.current"  # Current: this run's pair, settings and load error
    PAIR = "pair.choice"
    PENDING_PAIR = "pair.pending"  # a pair label to select on the next run (after "Save policy")
    POLICY_PATH, SFT_PATH, POLICY_BASE = "pair.policy_path", "pair.sft_path", "pair.policy_base"
    POLICY_UPLOAD, SFT_UPLOAD = "pair.policy_upload", "pair.sft_upload"
    UPLOADED = "pair.uploaded"  # uploader file_id -> saved Path, so each upload is written once
    DEVICE, DTYPE = "pair.device", "pair.dtype"
    PROMPTS, N_PROMPTS = "sampling.prompts", "sampling.n_prompts"
    SAMPLES, MAX_NEW_TOKENS = "sampling.samples_per_prompt", "sampling.max_new_tokens"
    TEMPERATURE, SEED, SAMPLE_FROM = "sampling.temperature", "sampling.seed", "sampling.sample_from"
    SAVED = "ppo.saved"  # label -> SavedPolicy, shown in the pair picker
    OVERVIEW_REWARD, OVERVIEW_REWARD_OTHER = "overview.reward", "overview.reward_other"
    INSPECT_SOURCE, INSPECT_PROMPT = "inspect.source", "inspect.prompt"
    INSPECT_SAMPLE, INSPECT_QUANTITY, INSPECT_STRIP = "inspect.sample", "inspect.quantity", "inspect.strip"
    SHIFT_SOURCE, SHIFT_VIEW = "shift.source", "shift.view"
    PPO_REWARD, PPO_PLACEMENT, PPO_ESTIMATOR = "ppo.reward", "ppo.placement", "ppo.estimator"
    PPO_BETA, PPO_ADAPTIVE, PPO_TARGET = "ppo.beta", "ppo.adaptive", "ppo.target_kl"
    PPO_LR, PPO_STEPS, PPO_BATCH, PPO_FROM = "ppo.lr", "ppo.steps", "ppo.batch_size", "ppo.from"
    PPO_POLLS = "ppo.polls"  # how many times the live panel has refreshed (shown, and benchmarked)
    PPO_FLASH = "ppo.flash"  # a message to show once on the next run (after "Save policy")
    SESSION = "app.session"  # this browser session's id, for the server-wide job registry
    LOAD_SOON = "pair.load_soon"  # the default view's pair loads on the next run of its fragment
    HEADLINE_ONLY = "app.headline_only"  # this run draws only the default view's headline (start_warm)
    REST_SOON = "app.rest_soon"  # the rest of the default view follows on the next run of its fragment


# --- errors -----------------------------------------------------------------------------------

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def plain(text: str) -> str:
    """Text for st.error/st.caption/st.markdown shown as typed: markdown, LaTeX and HTML escaped."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(str(text), quote=False))


def show_error(message: str) -> None:
    st.error(plain(message), icon=":material/error:")


def _is_oom(err: BaseException) -> bool:
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
        if not _is_oom(e):
            raise
        show_error(OOM_SENTENCE)
        if stop:
            st.stop()


# --- pairs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairSource:
    """What to load: policy and SFT checkpoints (HF folder, .zip of one, LoRA adapter, .gguf)."""

    label: str
    policy: str
    sft: str
    policy_base: str | None = None
    shown: tuple[tuple[str, str], ...] = ()
    """(saved path, name the user gave) of uploads, so error messages name the uploaded file."""

    def explain(self, message: str) -> str:
        for path, name in self.shown:
            message = message.replace(path, name)
        return message


@dataclass(frozen=True)
class SavedPolicy:
    """A policy saved from a live PPO run, with the SFT checkpoint it was trained against."""

    label: str
    policy: str
    sft: str


def _resolve(path: str) -> str:
    p = Path(path).expanduser()
    return str((p if p.is_absolute() else ROOT / p).resolve())


def fingerprint(path: str) -> str:
    """A short hash of the sizes and mtimes of the files at `path`: a changed checkpoint reloads."""
    p = Path(path)
    if not p.exists():
        return "missing"
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    h = hashlib.sha1()
    for f in files:
        s = f.stat()
        h.update(f"{f.relative_to(p) if f != p else f.name}:{s.st_size}:{s.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


@st.cache_resource(max_entries=4, show_spinner="Loading the pair…")
def _load_pair(policy: str, sft: str, policy_base: str | None, device: str, dtype: str, content: str):
    """One shared Pair per (paths, device, dtype, content); `content` only keys the cache."""
    from klviz.models import load_pair

    pair = load_pair(policy, sft, device=device, dtype=dtype, policy_base=policy_base)
    _TRIED.add(content)
    return pair


def pair_key(source: PairSource, device: str, dtype: str) -> str:
    """The cache key of a loaded pair: resolved paths, device, dtype and the files' fingerprints."""
    parts = [_resolve(source.policy), _resolve(source.sft), source.policy_base or "", device, dtype]
    parts += [fingerprint(_resolve(p)) for p in (source.policy, source.sft, source.policy_base) if p]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def load_pair_cached(source: PairSource, device: str = "auto", dtype: str = "auto"):
    """(Pair, its cache key) for `source`, from the shared cache when its files have not changed."""
    base = _resolve(source.policy_base) if source.policy_base else None
    key = pair_key(source, device, dtype)
    return _load_pair(_resolve(source.policy), _resolve(source.sft), base, device, dtype, key), key


def save_upload(name: str, data: bytes | BinaryIO, root: Path = UPLOAD_ROOT) -> Path:
    """Write an uploaded checkpoint (.zip of an HF folder, or .gguf) under `root`; returns its path.

    The folder is named by the content's hash, so the same upload is written once and loads from
    the cache; the file name is reduced to safe characters.
    """
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        raise KlvizError(f"{name} is neither a .zip of a Hugging Face model folder nor a .gguf file: "
                         "upload one of those.")
    raw = data if isinstance(data, bytes) else data.read()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[-120:]
    target = root / hashlib.sha256(raw).hexdigest()[:20] / safe
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(raw)
    return target


def _uploaded_path(uploaded) -> Path:
    """Save a st.file_uploader file once per upload (by its file_id)."""
    saved = st.session_state.setdefault(Keys.UPLOADED, {})
    if uploaded.file_id not in saved:
        saved[uploaded.file_id] = save_upload(uploaded.name, uploaded.getvalue(), UPLOAD_ROOT)
    return saved[uploaded.file_id]


# --- the sidebar --------------------------------------------------------------------------------

@dataclass
class Current:
    """What this run of the app has loaded, for the pages."""

    source: PairSource | None = None
    pair: object | None = None
    key: str = ""
    device: str = "auto"
    dtype: str = "auto"
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    error: str | None = None
    status: object | None = None  # the sidebar's placeholder for the pair's device line or error
    warm: tuple | None = None  # (the shipped default view's key or None,), once worked out this run


def _pair_options() -> dict[str, PairSource | None]:
    options: dict[str, PairSource | None] = {k: PairSource(k, *v) for k, v in SHIPPED_PAIRS.items()}
    for saved in st.session_state.get(Keys.SAVED, {}).values():
        options[saved.label] = PairSource(saved.label, saved.policy, saved.sft)
    options[LOCAL], options[UPLOAD] = None, None
    return options


def _pair_picker() -> PairSource | None:
    """The pair chooser: shipped pairs, saved PPO policies, local paths or two uploads."""
    options = _pair_options()
    pending = st.session_state.pop(Keys.PENDING_PAIR, None)
    if pending in options:
        st.session_state[Keys.PAIR] = pending
    choice = st.selectbox("Pair", list(options), key=Keys.PAIR,
                          help="Policy vs SFT. A policy saved on the Live PPO page appears here.")
    if choice == LOCAL:
        policy = st.text_input("Policy path", key=Keys.POLICY_PATH, placeholder="HF folder, .zip, LoRA, .gguf")
        sft = st.text_input("SFT path", key=Keys.SFT_PATH)
        base = st.text_input("Policy base (LoRA only)", key=Keys.POLICY_BASE)
        if not (policy.strip() and sft.strip()):
            st.info("Enter both paths.")
            return None
        return PairSource(f"{Path(policy).name} vs {Path(sft).name}", policy.strip(), sft.strip(),
                          base.strip() or None)
    if choice == UPLOAD:
        files = [st.file_uploader(label, type=list(UPLOAD_TYPES), key=key,
                                  help="A .zip of a Hugging Face model folder, or a .gguf file.")
                 for label, key in (("Policy checkpoint", Keys.POLICY_UPLOAD),
                                    ("SFT checkpoint", Keys.SFT_UPLOAD))]
        if not all(files):
            st.info("Upload both checkpoints.")
            return None
        with user_errors(stop=False):
            policy, sft = (_uploaded_path(f) for f in files)
            return PairSource(f"{files[0].name} vs {files[1].name}", str(policy), str(sft),
                              shown=((str(policy), files[0].name), (str(sft), files[1].name)))
        return None
    return options[choice]


def _sampling_settings() -> SamplingSettings:
    d = SamplingSettings()
    prompts = st.text_input("Prompts file", value=d.prompts, key=Keys.PROMPTS,
                            help="JSONL with prompt or messages (optional id), or .txt, one prompt per line.")
    n_prompts = st.number_input("Prompts used (0 = all)", 0, 10_000, d.n_prompts, key=Keys.N_PROMPTS)
    samples = st.number_input("Samples per prompt", 1, 64, d.samples_per_prompt, key=Keys.SAMPLES)
    max_new = st.number_input("Max new tokens", 1, 512, d.max_new_tokens, key=Keys.MAX_NEW_TOKENS)
    temperature = st.slider("Temperature", 0.0, 2.0, d.temperature, 0.05, key=Keys.TEMPERATURE)
    seed = st.number_input("Seed", 0, 2**31 - 1, d.seed, key=Keys.SEED)
    sample_from = st.segmented_control("Sample from", ["policy", "sft", "both"], default=d.sample_from,
                                       format_func={"policy": "Policy", "sft": "SFT", "both": "Both"}.get,
                                       required=True, key=Keys.SAMPLE_FROM)
    return SamplingSettings(prompts.strip() or d.prompts, int(n_prompts), int(samples), int(max_new),
                            float(temperature), int(seed), sample_from or d.sample_from)


def sidebar() -> Current:
    """Draw the shared sidebar; returns (and stores for the pages) the pair and settings chosen.

    The pair loads here, unless the page can start from the shipped table of the default view:
    then it loads once the page has reached the browser (`_load_pair_soon`), or when a page asks.
    """
    cur = Current()
    with st.sidebar:
        st.subheader("Pair")
        cur.source = _pair_picker()
        with st.expander("Device"):
            cur.device = st.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key=Keys.DEVICE)
            cur.dtype = st.selectbox("Weights dtype", ["auto", "float32", "bfloat16"], key=Keys.DTYPE)
        cur.status = st.empty()
        st.subheader("Sampling")
        cur.settings = _sampling_settings()
    st.session_state[Keys.CURRENT] = cur
    if cur.source is None or _warm_view(cur) is None or pair_key(cur.source, cur.device, cur.dtype) in _TRIED:
        ensure_pair()
    else:
        with cur.status.container():
            _load_pair_soon()
    return cur


_TRIED: set[str] = set()  # keys of pairs this server has loaded (st.cache_resource holds them) or failed to
LOAD_SOON_S = 1.5  # the default view's pair loads this long after its page reached the browser
REST_SOON_S = 1.5  # the rest of a new session's first view follows its headline this long after


def _timed_run(key: str) -> bool:
    """For a fragment with run_every: False when the run that draws it calls it (and noted under
    `key`), True on the fragment's own next run, which the browser asks for after the interval."""
    if st.session_state.pop(key, False):
        return True
    st.session_state[key] = True
    return False


@st.fragment(run_every=LOAD_SOON_S)
def _load_pair_soon() -> None:
    """The default view's page is drawn from the shipped table; its pair loads on this fragment's
    next run, which the browser asks for once the page has arrived. Loading it in the same run
    (importing torch and transformers holds the interpreter for seconds) kept the finished page
    from being sent: the first chart showed after 4-5 s instead of 2-3 s on 2 cores."""
    if not _timed_run(Keys.LOAD_SOON):
        st.caption("Loading the pair…")
        return
    cur = current()
    try:
        pair, _ = load_pair_cached(cur.source, cur.device, cur.dtype)
    except Exception:  # shown, as one sentence, by the full run below (ensure_pair loads it again)
        _TRIED.add(pair_key(cur.source, cur.device, cur.dtype))
    else:  # and what the next pages need, into the caches: a first page visit took 1.3 s, not 0.6.
        with contextlib.suppress(KlvizError, OSError):  # the page that needs it shows any error
            _all_prompts(cur.settings)
            table = _warm_table(cur)  # pandas; and the Mass shift page's frames of its default choice
            if table is not None and len(table):
                choice = shift_choices(table)[-1]
                mass_shift(shift_rows(table, choice), choice, pair)
        claim_verdicts()  # the KL lab's verdicts (0.2 s on a first visit)
    st.rerun()  # the whole app again: the sidebar and every page now have the pair


def start_warm(default_page: bool) -> bool:
    """True, after storing the default view as this run's Current, when a new browser session opens
    on the default page (the Overview) and the shipped default view applies (klviz.shipped_view).

    Then app.py runs the page before drawing the sidebar (whose widgets hold their defaults on a
    session's first run anyway), and the page ends the run after its headline (`headline_only`),
    so the chart reaches the browser first and is drawn alone.
    """
    sidebar_keys = (Keys.PAIR, Keys.DEVICE, Keys.DTYPE, Keys.PROMPTS, Keys.N_PROMPTS, Keys.SAMPLES,
                    Keys.MAX_NEW_TOKENS, Keys.TEMPERATURE, Keys.SEED, Keys.SAMPLE_FROM, Keys.PENDING_PAIR)
    if Keys.CURRENT in st.session_state or not default_page or any(k in st.session_state for k in sidebar_keys):
        return False
    label = next(iter(SHIPPED_PAIRS))
    cur = Current(source=PairSource(label, *SHIPPED_PAIRS[label]))
    if _warm_view(cur) is None:
        return False
    st.session_state[Keys.CURRENT] = cur
    st.session_state[Keys.HEADLINE_ONLY] = True
    return True


def headline_only() -> None:
    """End a new session's first run here, after the default view's headline, when `start_warm` began it.

    The browser then draws the title, the figures and the chart alone. Whatever arrived with them
    (the sidebar's widgets, the page's controls) was rendered while plotly.js (4.7 MB) was being
    evaluated, and delayed the first chart by about 0.6 s on 2 cores. The sidebar and the rest of
    the page follow in a full run REST_SOON_S later (`_rest_soon`); the pair loads after that.
    """
    if st.session_state.pop(Keys.HEADLINE_ONLY, False):
        _rest_soon()
        st.stop()


@st.fragment(run_every=REST_SOON_S)
def _rest_soon() -> None:
    if _timed_run(Keys.REST_SOON):
        st.rerun()  # the whole app: the sidebar, then the page with its controls


def ensure_pair():
    """Load the current pair (from the cache when its files have not changed) once per run, and show
    its device line, or its error, in the sidebar. Returns the Pair, or None."""
    cur = current()
    if cur.source is None or cur.pair is not None or cur.error:
        return cur.pair
    with (cur.status.container() if cur.status is not None else contextlib.nullcontext()):
        try:
            cur.pair, cur.key = load_pair_cached(cur.source, cur.device, cur.dtype)
        except KlvizError as e:
            cur.error = cur.source.explain(str(e))
        except Exception as e:
            if not _is_oom(e):
                raise
            cur.error = OOM_SENTENCE
        if cur.error:
            show_error(cur.error)
        else:
            st.caption(plain(f"Running on {cur.pair.device} · {str(cur.pair.dtype).removeprefix('torch.')}"))
            for info in (cur.pair.policy_info, cur.pair.sft_info):
                st.caption(plain(info.describe()))
    return cur.pair


def current() -> Current:
    return st.session_state.get(Keys.CURRENT) or Current()


def require_pair():
    """The loaded Pair, or a note in the page and the end of this run."""
    pair = ensure_pair()
    if pair is None:
        cur = current()
        st.info("No pair is loaded: see the error in the sidebar." if cur.error else "Choose a pair in the sidebar.")
        st.stop()
    return pair


# --- prompts and analysis -----------------------------------------------------------------------

@st.cache_data(max_entries=8, show_spinner=False)
def _read_prompts(path: str, content: str) -> list:
    from klviz.prompts import read_prompts

    return read_prompts(path)


def _all_prompts(settings: SamplingSettings) -> list:
    """Every prompt of the settings' prompts file (cached by path and the file's fingerprint)."""
    path = _resolve(settings.prompts)
    return _read_prompts(path, fingerprint(path))


def prompts() -> list:
    """The sidebar's prompts (the first n when a number is set); stops the run with st.error if unreadable."""
    s = current().settings
    with user_errors(stop=True):
        found = _all_prompts(s)
        return found[: s.n_prompts] if s.n_prompts else found


@st.cache_data(max_entries=16, show_spinner="Sampling and scoring…")
def _analysis(table: str, _settings: SamplingSettings, _pair, _prompts) -> pd.DataFrame:
    """The token table; `table` (`table_key`: the pair's key, the prompts' content, the settings) keys the cache."""
    from klviz import sampling  # torch: loaded with the pair, after the first view

    return sampling.settings_table(_pair, _prompts, _settings)


@st.cache_data(max_entries=8, show_spinner=False)
def _content_hash(path: str, fingerprint_: str) -> str:
    return shipped_view.content_hash(path)


@st.cache_data(max_entries=2, show_spinner=False)
def _read_warm(path: str, key: str) -> pd.DataFrame | None:
    return shipped_view.read_warm_table(path, key)


@st.cache_data(max_entries=2, show_spinner=False)
def _read_warm_view(path: str, key: str) -> dict | None:
    return shipped_view.read_warm_view(path, key)


def _warm_key(cur: Current) -> str | None:
    """The key of the shipped default view when `cur` is that view (see klviz.shipped_view), else None."""
    if cur.warm is None:
        cur.warm = (_find_warm_key(cur),)
    return cur.warm[0]


def _sample_file(name: str) -> str:
    """A file or folder of the shipped sample data, resolved."""
    return _resolve(f"{SAMPLE_DIR}/{name}")


def _find_warm_key(cur: Current) -> str | None:
    policy, sft = (_sample_file(name) for name in shipped_view.WARM_PAIR)
    if (cur.source is None or cur.source.policy_base or cur.settings != SamplingSettings()
            or (_resolve(cur.source.policy), _resolve(cur.source.sft)) != (policy, sft)
            or not shipped_view.runs_on_cpu_float32(cur.device, cur.dtype)):
        return None
    prompts = _resolve(cur.settings.prompts)
    hashes = lambda p: _content_hash(p, fingerprint(p))  # noqa: E731
    return shipped_view.warm_key(policy, sft, prompts, cur.settings, hashes)


def _warm_view(cur: Current) -> dict | None:
    """The Overview's figures of the shipped default view (klviz.shipped_view) when `cur` is that view and they
    were stored under its key, else None. Read without pandas."""
    key = _warm_key(cur)
    return None if key is None else _read_warm_view(_sample_file(shipped_view.WARM_VIEW), key)


def _shipped_key(cur: Current) -> str | None:
    """The default view's key when `cur` is that view and the shipped view matches it, else None."""
    return _warm_key(cur) if _warm_view(cur) is not None else None


def _warm_table(cur: Current) -> pd.DataFrame | None:
    """The shipped token table of the default view when `cur` is that view, else None."""
    key = _shipped_key(cur)
    return None if key is None else _read_warm(_sample_file(shipped_view.WARM_TABLE), key)


def table_later() -> Callable[[], pd.DataFrame]:
    """The current token table, as a callable for downloads built on click.

    On the default view it reads the shipped table only when called: the run that sends the first
    chart stays light, because this same Python process is serving plotly.js (4.7 MB) to the browser
    meanwhile, and a busy script thread (importing pandas, reading parquet) held that download back
    by about 0.4 s. Otherwise the table is loaded (cached) now.
    """
    key = _shipped_key(current())
    if key is not None:
        return functools.partial(shipped_view.read_warm_table, _sample_file(shipped_view.WARM_TABLE), key)
    df = require_table()
    return lambda: df


def overview() -> tuple[dict, Mapping]:
    """The Overview's headline figures (`tables.headline`) and band totals (`tables.band_totals`).

    On the default view they come from the shipped view (klviz.shipped_view), so its chart is sent before
    pandas has loaded; otherwise from the token table.
    """
    view = _warm_view(current())
    if view is not None:
        return view["headline"], view["bands"]
    from klviz.views import tables

    df = require_table()
    return tables.headline(df), tables.band_totals(df)


def require_table() -> pd.DataFrame:
    """The token table of the current pair and settings (cached), or st.error and the end of this run."""
    cur = current()
    table = _warm_table(cur)
    if table is not None:
        return table
    pair, found = require_pair(), prompts()
    with user_errors(stop=True):
        return _analysis(table_key(), cur.settings, pair, found)


def decoder(pair):
    """token id -> text under the pair's tokenizer, memoized per pair."""
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


def table_key() -> str:
    """Names the current token table: the shipped default view's key, or the pair's with the settings."""
    cur = current()
    if _warm_table(cur) is not None:
        return f"warm:{_warm_key(cur)}"
    prompts_content = fingerprint(_resolve(cur.settings.prompts))
    return f"{cur.key}:{prompts_content}:{sorted(asdict(cur.settings).items())}"


@st.cache_data(max_entries=8, show_spinner=False)
def _mass_shift(table: str, choice: str | None, _rows: pd.DataFrame, _decode) -> dict[str, pd.DataFrame]:
    from klviz.views import tables

    return tables.mass_shift(_rows, _decode)


def mass_shift(rows: pd.DataFrame, choice: str | None, pair) -> dict[str, pd.DataFrame]:
    """`tables.mass_shift` of the current table's `rows` for `choice` (`shift_rows`), cached per table."""
    return _mass_shift(table_key(), choice, rows, decoder(pair))


# --- downloads ----------------------------------------------------------------------------------

def _parquet_bytes(df: pd.DataFrame, meta: dict) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tokens.parquet"
        write_table(df, path, {k: str(v) for k, v in meta.items()})
        return path.read_bytes()


def _csv_bytes(df: pd.DataFrame) -> bytes:
    flat = df.copy()
    for col in flat.columns:  # list columns -> "[a, b, ...]" so the CSV has one value per cell
        if flat[col].dtype == object and len(flat) and not isinstance(flat[col].iloc[0], str):
            flat[col] = flat[col].map(lambda v: "[" + ", ".join(f"{float(x):.9g}" for x in v) + "]"
                                      if hasattr(v, "__len__") else v)
    buf = io.StringIO()
    flat.to_csv(buf, index=False)
    return buf.getvalue().encode()


def _report_bytes(title: str, figures, info: dict) -> bytes:
    from klviz.views.report import report_html

    return report_html(title, figures(), info).encode()


def meta() -> dict[str, str]:
    """What the current view shows: the pair and the sampling settings (for reports and files)."""
    cur = current()
    out = {"pair": cur.source.label if cur.source else "", "policy": cur.source.policy if cur.source else "",
           "sft": cur.source.sft if cur.source else ""}
    if cur.pair is not None:
        out.update(device=str(cur.pair.device), dtype=str(cur.pair.dtype))
    elif _warm_view(cur) is not None:  # the shipped default table, computed on the CPU in float32
        out.update(device="cpu", dtype="torch.float32")
    out.update({k: str(v) for k, v in asdict(cur.settings).items()})
    return out


def open_tab(labels: list[str], key: str):
    """st.tabs of which only the open one is drawn: returns (its label, its container).

    With on_change="rerun" the tabs track which one is open (`tab.open`) and a click reruns the
    page, so the page builds the open tab's content alone.
    """
    tabs = st.tabs(labels, key=key, on_change="rerun")
    return next(((label, tab) for label, tab in zip(labels, tabs) if tab.open), (labels[0], tabs[0]))


def downloads(table: pd.DataFrame | Callable[[], pd.DataFrame], title: str, figures) -> None:
    """Download buttons: the token table (parquet, CSV) and an HTML report of `figures`.

    `table` is the token table or a callable returning it (`table_later`); `figures` is a callable
    returning [(name, figure)]. Every file is built only when clicked.
    """
    df = table if callable(table) else (lambda: table)
    info = meta()
    cols = st.columns(3)
    cols[0].download_button("Token table (parquet)", lambda: _parquet_bytes(df(), info),
                            file_name="klviz_tokens.parquet", mime="application/octet-stream",
                            on_click="ignore", icon=":material/download:")
    cols[1].download_button("Token table (CSV)", lambda: _csv_bytes(df()), file_name="klviz_tokens.csv",
                            mime="text/csv", on_click="ignore", icon=":material/download:")
    cols[2].download_button("HTML report", lambda: _report_bytes(title, figures, info),
                            file_name="klviz_report.html", mime="text/html", on_click="ignore",
                            icon=":material/download:")


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
    scores = get_reward(reward_name, _tokenizer)([_texts.get(i, "") for i in seq["prompt_id"]],
                                                 list(seq["response"]))
    return seq.assign(reward=scores.numpy()).groupby("source", sort=False)["reward"].mean().to_dict()


def mean_rewards(df: pd.DataFrame, reward_name: str) -> dict[str, float]:
    """Mean reward of the sampled responses (prompt + response), by source; cached per table."""
    texts = {str(p.id): prompt_text(p) for p in prompts()}
    pair = require_pair()
    return _mean_rewards(table_key(), reward_name, df, pair.tokenizer, texts)


# --- live PPO runs ------------------------------------------------------------------------------

MAX_JOBS = 2  # PPO jobs running at once on one server: each takes a CPU core (klviz.ppo.jobs)
REFRESH_S = 0.4  # the live panel's polling interval while a job runs


@dataclass
class Run:
    """One PPO run of this browser session."""

    name: str
    job: object  # klviz.ppo.jobs.PPOJob
    sft: str  # the SFT checkpoint it trains against, as the pair source gave it
    estimator: str  # the metric holding the chosen estimate, for the curves


class RunBook:
    """This session's PPO runs: the newest MAX_RUNS kept, to overlay. Lives in a session-scoped
    resource, so when the tab closes (the session disconnects) every run is stopped."""

    def __init__(self, max_runs: int = 4):
        self.max_runs, self.runs, self.count = max_runs, {}, 0
        self._figures: dict[str, tuple] = {}

    def figure(self, name: str, key, build):
        """The figure `name`, rebuilt only when `key` changes: the live panel redraws every
        REFRESH_S, but its curves change only when a step ends."""
        cached = self._figures.get(name)
        if cached is None or cached[0] != key:
            cached = self._figures[name] = (key, build())
        return cached[1]

    def add(self, run: Run) -> None:
        self.runs[run.name] = run
        finished = [n for n, r in self.runs.items() if not r.job.running]
        while len(self.runs) > self.max_runs and finished:
            self.runs.pop(finished.pop(0))

    def latest(self) -> Run | None:
        return next(reversed(self.runs.values()), None)

    def any_running(self) -> bool:
        return any(r.job.running for r in self.runs.values())

    def stop_all(self) -> None:
        for run in self.runs.values():
            run.job.stop()


def _release_runs(book: RunBook) -> None:
    book.stop_all()


@st.cache_resource(scope="session", on_release=_release_runs, show_spinner=False)
def runbook() -> RunBook:
    """This browser session's runs; released (and every run stopped) when the session disconnects."""
    from klviz.views.plots import MAX_RUNS

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
    from klviz.ppo.losses import ESTIMATOR_METRIC

    pair, cur, book = require_pair(), current(), runbook()
    if book.any_running():
        raise KlvizError("A PPO run is already training in this tab: stop it before starting another.")
    texts = [prompt_text(p) for p in prompts()]  # a chat prompt trains as its messages' text
    book.count += 1
    name = f"#{book.count} {cfg.kl_estimator} in {cfg.kl_placement}, β={cfg.kl_coef:g}"
    if cfg.target_kl is not None:
        name += f"→KL {cfg.target_kl:g}"
    job = job_registry().start(session_id(), pair.sft, pair.tokenizer, texts, cfg,
                               policy_init=pair.policy if start_from_policy else None)
    run = Run(name, job, cur.source.sft, ESTIMATOR_METRIC[cfg.kl_estimator])
    book.add(run)
    return run


def save_run(run: Run) -> SavedPolicy:
    """Save a run's policy and list it in the sidebar's pair picker (selected on the next run)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", run.name).strip("_")
    path = run.job.save(SAVED_ROOT / session_id() / f"{slug}_{time.strftime('%H%M%S')}")
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


def count_poll() -> int:
    """Count this live-panel refresh (shown on the page; the browser benchmark reads it)."""
    st.session_state[Keys.PPO_POLLS] = st.session_state.get(Keys.PPO_POLLS, 0) + 1
    return st.session_state[Keys.PPO_POLLS]
