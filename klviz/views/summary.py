"""The headline figures of any token table, as a dict of sections (`klviz summary`, pipelines' logs).

    {"table": {...counts, what made it...},
     "overall": FIGURES, "by_source": {source: FIGURES}, "by_step": {step: FIGURES},
     "token_shift": {...}, "forking": {...}, "entropy": {...}}   (klviz.views.acted.acted_summary)

FIGURES (NaN where there are no tokens):
    kl_reverse = KL(policy || SFT) = sum_v p(v) log(p(v)/q(v)),  kl_forward = KL(SFT || policy)
    *_per_token: mean over response tokens; *_per_sequence: mean over responses of the response's sum
    (tv_per_sequence: mean over responses of the response's mean total variation, tv being per token).
A response is (source, prompt_id, sample_id) and, in a checkpoint series, its checkpoint and step, so
the same response scored under K checkpoints counts K times. by_step is there when the table has a
`step` column (logged rollouts, `klviz trajectory`). Sections are added, never renamed, so a reader
keyed on today's names keeps working. Pure pandas; no torch, no streamlit.
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from klviz.views.acted import FIRST_ORDER, acted_summary
from klviz.views.tables import DEFAULT_SOURCE, SEQUENCE_KEYS

SERIES_KEYS = ("checkpoint", "step")
"""Columns that, when present, also tell responses apart (one response under several checkpoints)."""
SUMMED = ("kl_reverse", "kl_forward", "entropy_policy", "entropy_sft")
NEEDED = ("prompt_id", "sample_id", "position", "kl_reverse", "kl_forward", "tv", "entropy_policy", "entropy_sft")
ACTED_NEEDED = ("rank_sft", "entropy_sft", "entropy_policy", "kl_reverse", "kl_forward")
"""What acted_summary reads (FIRST_ORDER too, where the table has it: older tables give NaN there)."""
FIGURES = ("n_sequences", "n_tokens",
           *(f"{c}_per_token" for c in SUMMED), "tv_per_token",
           *(f"{c}_per_sequence" for c in SUMMED), "tv_per_sequence")


def sequence_keys(df: pd.DataFrame) -> list[str]:
    """The columns that name one response in this table."""
    return list(SEQUENCE_KEYS) + [c for c in SERIES_KEYS if c in df.columns]


def figures(df: pd.DataFrame) -> dict[str, float | int]:
    """FIGURES of the rows in `df` (one token table, or one source's or step's rows)."""
    if len(df) == 0:
        return {"n_sequences": 0, "n_tokens": 0, **{k: math.nan for k in FIGURES[2:]}}
    if "source" not in df.columns:
        df = df.assign(source=DEFAULT_SOURCE)
    seq = df.groupby(sequence_keys(df), sort=False, dropna=False)
    sums = seq[list(SUMMED)].sum()
    out: dict[str, float | int] = {"n_sequences": int(seq.ngroups), "n_tokens": int(len(df))}
    for c in SUMMED:
        out[f"{c}_per_token"] = float(df[c].mean())
    out["tv_per_token"] = float(df["tv"].mean())
    for c in SUMMED:
        out[f"{c}_per_sequence"] = float(sums[c].mean())
    out["tv_per_sequence"] = float(seq["tv"].mean().mean())
    return out


def _groups(df: pd.DataFrame, column: str) -> dict[str, dict]:
    return {str(k): figures(g) for k, g in df.groupby(column, sort=True, dropna=False)}


def summary(df: pd.DataFrame, metadata: Mapping[str, str] | None = None) -> dict[str, dict]:
    """The sections described above; `metadata` (the table's klviz metadata) names what made it."""
    meta = dict(metadata or {})
    table = {k: meta[k] for k in ("command", "policy", "sft", "input", "input_format", "top_k", "version")
             if k in meta}
    out: dict[str, dict] = {"table": table, "overall": figures(df)}
    out["by_source"] = _groups(df, "source") if "source" in df.columns else {DEFAULT_SOURCE: out["overall"]}
    if "step" in df.columns:
        out["by_step"] = _groups(df, "step")
    if set(ACTED_NEEDED) <= set(df.columns):  # where RL acted: token shift, forking positions, entropy change
        out.update(acted_summary(df))
    return out


def columns_needed(available: list[str]) -> list[str]:
    """The columns summary reads, of those a parquet holds (so a large table loads only those)."""
    wanted = set(NEEDED) | set(ACTED_NEEDED) | {"source", FIRST_ORDER, *SERIES_KEYS}
    return [c for c in available if c in wanted]


def missing_columns(available: list[str]) -> list[str]:
    return [c for c in NEEDED if c not in available]


def to_text(s: Mapping[str, dict]) -> str:
    """A plain-text rendering: one line per section and group."""
    lines = [" ".join(f"{k}={v}" for k, v in s["table"].items())] if s.get("table") else []
    head = ["group", *FIGURES]
    rows = [["overall", *(s["overall"][f] for f in FIGURES)]]
    for section in ("by_source", "by_step"):
        for key, fig in s.get(section, {}).items():
            rows.append([f"{section[3:]}={key}", *(fig[f] for f in FIGURES)])
    cells = [head] + [[r[0], *(_fmt(v) for v in r[1:])] for r in rows]
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(head))]
    lines += ["  ".join(str(c[i]).rjust(widths[i]) for i in range(len(head))) for c in cells]
    return "\n".join(lines)


def _fmt(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:.6g}"
