"""The shared sidebar: the pair picker (shipped pairs, saved PPO policies, local paths, uploads), the
device and the sampling settings. It builds one View per run (klviz.app.view) for every page."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from klviz import pairs, paths, server_options, uploads
from klviz.app import guard, opened
from klviz.app.feedback import plain, show_error, user_errors
from klviz.app.keys import Keys
from klviz.app.opened import TableSource
from klviz.app.view import ResponsesFile, View, make_view
from klviz.errors import KlvizError
from klviz.pairs import SHIPPED_PAIRS, UPLOAD_TYPES, PairSource
from klviz.settings import SamplingSettings

LOCAL, UPLOAD = "Local paths…", "Upload checkpoints…"
SAMPLE, SCORE_FILE = "sample", "file"
RESPONSE_TYPES = ("jsonl", "parquet")
RESPONSES_HELP = ("Responses you already have, scored by the pair as `klviz score --input` does: klviz JSONL "
                  "(prompt, response), TRL completions (prompt, completion; text or chat messages), verl "
                  "rollout_data_dir dumps (input, output) or RL Logging Board JSONL; a file or a folder of them.")


def _uploaded_path(uploaded, types: tuple = UPLOAD_TYPES) -> Path:
    """Save a st.file_uploader file once per upload (by its file_id) into this session's unguessable upload
    folder (klviz.app.guard); an upload refused before (its file deleted) raises its sentence again."""
    saved = st.session_state.setdefault(Keys.UPLOADED, {})
    if uploaded.file_id not in saved:
        folder = guard.upload_folder()
        saved[uploaded.file_id] = (uploads.save_upload(uploaded.name, uploaded.getvalue(), folder)
                                   if types == UPLOAD_TYPES else
                                   pairs.save_upload(uploaded.name, uploaded.getvalue(), folder, types))
    found = saved[uploaded.file_id]
    if isinstance(found, str):
        raise KlvizError(found)
    return found


def discard_refused_uploads(source: PairSource, message: str) -> None:
    """Delete the uploads of a pair that failed to load: those the message names, else both."""
    saved = st.session_state.get(Keys.UPLOADED, {})
    mine = {str(p): fid for fid, p in saved.items() if isinstance(p, Path)}
    named = [path for path, name in source.shown if path in mine and name in message]
    for path in named or [path for path, _ in source.shown if path in mine]:
        uploads.discard(path)
        saved[mine[path]] = message


def given_pair() -> dict[str, PairSource]:
    """The pair the server was started with (`klviz dashboard --policy P --sft S`), if any."""
    opts = server_options.current()
    if not (opts.policy and opts.sft):
        return {}
    label = f"Given: {Path(opts.policy).name} vs {Path(opts.sft).name}"
    return {label: PairSource(label, opts.policy, opts.sft)}


def _pair_options() -> dict[str, PairSource | TableSource | None]:
    options: dict[str, PairSource | TableSource | None] = {**opened.given_tables(), **given_pair()}
    options.update({k: PairSource(k, *v) for k, v in SHIPPED_PAIRS.items()})
    for saved in st.session_state.get(Keys.SAVED, {}).values():
        options[saved.label] = PairSource(saved.label, saved.policy, saved.sft,
                                          shown=((saved.policy, f"the policy saved from {saved.label}"),))
    options[LOCAL], options[UPLOAD], options[opened.OPEN_TABLE] = None, None, None
    return options


def _table_picker() -> TableSource | None:
    """"Open a token table…": a path (inside the allowed folders) or an uploaded .parquet."""
    path = st.text_input("Token table path", key=Keys.TABLE_PATH, placeholder="table.parquet",
                         help="A parquet written by klviz score, analyze or trajectory.")
    upload = st.file_uploader("…or upload one", type=["parquet"], key=Keys.TABLE_UPLOAD)
    with user_errors(stop=False):
        if upload is not None:
            saved = _uploaded_path(upload, ("parquet",))
            return TableSource(f"{opened.TABLE_PREFIX}{upload.name}", str(saved), upload.name)
        if path.strip():
            return opened.resolve_typed(path.strip())
        st.info("Enter a path or upload a table.")
    return None


def _table_sidebar(view: View) -> None:
    """An opened table: what made it, and the checkpoint step shown when it is a series."""
    try:  # the light read: metadata and scalar columns (the full frame follows, klviz.app.opened)
        meta, steps = opened.meta(view.table), opened.steps(view.table)
    except KlvizError as e:
        view.error = str(e)
        show_error(view.error)
        return
    for line in opened.describe(meta):
        st.caption(plain(line))
    if steps:
        pending = st.session_state.pop(Keys.PENDING_STEP, None)
        if pending in steps:
            st.session_state[Keys.TABLE_STEP] = pending
        view.step = st.selectbox("Checkpoint step", steps, index=len(steps) - 1, key=Keys.TABLE_STEP,
                                 help="The other pages show this checkpoint's rows; the Trajectory page all.")


def _local_pair() -> PairSource | None:
    policy = st.text_input("Policy path", key=Keys.POLICY_PATH, placeholder="HF folder, .zip, LoRA, .gguf")
    sft = st.text_input("SFT path", key=Keys.SFT_PATH)
    base = st.text_input("Policy base (LoRA only)", key=Keys.POLICY_BASE)
    if not (policy.strip() and sft.strip()):
        st.info("Enter both paths.")
        return None
    with user_errors(stop=False):  # inside the allowed roots, no special files, a bounded folder walk
        typed = [t.strip() for t in (policy, sft, base) if t.strip()]
        real = [guard.user_path(t) for t in typed]
        for r, t in zip(real, typed):
            paths.fingerprint(r, shown=t)
        return PairSource(f"{Path(typed[0]).name} vs {Path(typed[1]).name}", real[0], real[1],
                          real[2] if len(real) > 2 else None, shown=tuple(zip(real, typed)))
    return None


def _uploaded_pair() -> PairSource | None:
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


def _pair_picker() -> PairSource | TableSource | None:
    """The pair chooser: shipped pairs, saved PPO policies, local paths or two uploads; or a token table."""
    options = _pair_options()
    pending = st.session_state.pop(Keys.PENDING_PAIR, None)
    if pending in options:
        st.session_state[Keys.PAIR] = pending
    choice = st.selectbox("Pair", list(options), key=Keys.PAIR,
                          help="Policy vs SFT. A policy saved on the Live PPO page appears here.")
    if choice == LOCAL:
        return _local_pair()
    if choice == UPLOAD:
        return _uploaded_pair()
    if choice == opened.OPEN_TABLE:
        return _table_picker()
    return options[choice]


def _responses_file() -> ResponsesFile | None:
    """"Responses file": a path (inside the allowed folders) or an uploaded .jsonl/.parquet, to score."""
    typed = st.text_input("Responses file", key=Keys.RESPONSES_PATH, placeholder="rollouts.jsonl",
                          help=RESPONSES_HELP).strip()
    upload = st.file_uploader("…or upload one", type=list(RESPONSE_TYPES), key=Keys.RESPONSES_UPLOAD)
    with user_errors(stop=False):
        if upload is not None:
            saved = str(_uploaded_path(upload, RESPONSE_TYPES))
            return ResponsesFile(saved, upload.name, paths.fingerprint(saved, shown=upload.name), upload.file_id)
        if typed:
            real = guard.user_path(typed)  # allowed roots only, no special files
            return ResponsesFile(real, typed, paths.fingerprint(real, shown=typed))
        st.info("Enter a path or upload a file of responses.")
    return None


def discard_refused_responses(responses: ResponsesFile, message: str) -> None:
    """Delete an uploaded responses file the scoring refused (the message names it); its upload then
    shows that message again until another file is chosen."""
    if responses.upload_id is None or responses.shown not in message:
        return
    uploads.discard(responses.path)
    st.session_state.setdefault(Keys.UPLOADED, {})[responses.upload_id] = message


def _sampling_settings(disabled: bool = False) -> SamplingSettings:
    """The sampling widgets (disabled while a responses file is scored instead)."""
    d, off = SamplingSettings(), {"disabled": disabled}
    prompts = st.text_input("Prompts file", value=d.prompts, key=Keys.PROMPTS, **off,
                            help="JSONL with prompt or messages (optional id), or .txt, one prompt per line.")
    n_prompts = st.number_input("Prompts used (0 = all)", 0, 10_000, d.n_prompts, key=Keys.N_PROMPTS, **off)
    samples = st.number_input("Samples per prompt", 1, 64, d.samples_per_prompt, key=Keys.SAMPLES, **off)
    max_new = st.number_input("Max new tokens", 1, 512, d.max_new_tokens, key=Keys.MAX_NEW_TOKENS, **off)
    temperature = st.slider("Temperature", 0.0, 2.0, d.temperature, 0.05, key=Keys.TEMPERATURE, **off)
    seed = st.number_input("Seed", 0, 2**31 - 1, d.seed, key=Keys.SEED, **off)
    sample_from = st.segmented_control("Sample from", ["policy", "sft", "both"], default=d.sample_from,
                                       format_func={"policy": "Policy", "sft": "SFT", "both": "Both"}.get,
                                       required=True, key=Keys.SAMPLE_FROM, **off)
    return SamplingSettings(prompts.strip() or d.prompts, int(n_prompts), int(samples), int(max_new),
                            float(temperature), int(seed), sample_from or d.sample_from)


def sidebar() -> View:
    """Draw the shared sidebar; returns (and stores for the pages) this run's View.

    The pair is not loaded here: klviz.app.first_view loads it now, or soon after the page.
    """
    with st.sidebar:
        st.subheader("Models")  # the pair and its device (the select box below is labelled "Pair")
        source = _pair_picker()
        if isinstance(source, TableSource):  # a token table: no pair, no sampling
            view = make_view(None)
            view.table = source
            _table_sidebar(view)
            st.session_state[Keys.CURRENT] = view
            return view
        with st.expander("Device"):
            device = st.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key=Keys.DEVICE)
            dtype = st.selectbox("Weights dtype", ["auto", "float32", "bfloat16"], key=Keys.DTYPE)
        status = st.empty()
        st.subheader("Responses")
        mode = st.segmented_control("Responses", [SAMPLE, SCORE_FILE], default=SAMPLE, required=True,
                                    key=Keys.RESPONSES_MODE, label_visibility="collapsed",
                                    format_func={SAMPLE: "Sample from prompts", SCORE_FILE: "Responses file"}.get)
        scoring_file = mode == SCORE_FILE
        responses = _responses_file() if scoring_file else None
        settings = _sampling_settings(disabled=scoring_file)
    view = make_view(source, device, dtype, settings, scoring_file, responses)
    view.status = status
    st.session_state[Keys.CURRENT] = view
    return view
