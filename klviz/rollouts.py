"""Responses to score, read from what a trainer logged: klviz's JSONL, TRL's completions, verl's
rollout dumps, RL Logging Board's JSONL. No torch and no streamlit at import.

Formats (one per file, told apart by the first row's fields):

- klviz: `{"prompt": str, "response": str}` or `{"prompt_ids": [int], "response_ids": [int]}`,
  optional `prompt_id` (default: the line number) and `sample_id` (default 0).
- TRL: `prompt` and `completion`, each plain text or chat messages (`[{"role", "content"}]`), in
  parquet or JSONL, with `step`, `reward`, `reward_<function>` and `advantage` beside them: the
  columns GRPOTrainer's `log_completions` writes (TRL's completion-log dataset cards, e.g.
  huggingface.co/datasets/essobi/comps: "step, prompt, completion, <reward_function_name>, advantage").
- verl: `input`, `output`, `score`, `step` (and `gts`, plus every reward_extra_info key), one JSONL per
  step named `<step>.jsonl`, as RayPPOTrainer._dump_generations writes into
  `trainer.rollout_data_dir` (verl/trainer/ppo/ray_trainer.py). Text was decoded with
  skip_special_tokens=True, so the prompt is encoded with the tokenizer's special tokens, as klviz's.
- RL Logging Board: `prompt`, `response`, `response_tokens`, `step`, `reward`, `logprobs`,
  `ref_logprobs`, `token_rewards`, `values`, as its verl logger (RLLoggingBoardLogger.log) writes
  `rollout_data_rank0.jsonl`. Its prompt was decoded WITH special tokens, so it is encoded without
  adding any (the BOS is already in the text).

Every other per-response scalar field (step, reward, score, advantage, ...) becomes a column of the
token table (ScoreInput.extra); list and object fields (per-token logprobs, ground truths) are left out.
A folder is read file by file, in step order (verl writes one file per step).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from klviz.errors import KlvizError
from klviz.io import read_jsonl
from klviz.prompts import Prompt, _messages

FORMATS = ("klviz", "trl", "verl", "rl_logging_board")
# Columns the token table already has: a logged field of the same name is kept as "<name>_logged".
RESERVED = ("source", "prompt_id", "sample_id", "position", "token_id", "token", "checkpoint")
_KEYS = {"klviz": ("prompt", "response", "prompt_ids", "response_ids", "prompt_id", "sample_id"),
         "trl": ("prompt", "completion"), "verl": ("input", "output"),
         "rl_logging_board": ("prompt", "response", "response_tokens")}


@dataclass(frozen=True)
class Rollout:
    """One logged (prompt, response), before tokenization."""

    origin: str
    """Where it came from, for error messages: "rollouts.jsonl, line 3"."""
    prompt_id: str
    """Which prompt (the same text gets the same id across the file)."""
    sample_id: int
    """Which response to that prompt (unique per prompt across the file)."""
    prompt: Prompt | None = None
    """The prompt as text or chat messages (None when ids are given)."""
    response: str | None = None
    """The response's text (None when ids are given)."""
    prompt_ids: tuple[int, ...] | None = None
    """Token ids given in the file (klviz format)."""
    response_ids: tuple[int, ...] | None = None
    """Token ids given in the file (klviz format)."""
    prompt_has_specials: bool = False
    """The prompt text already holds the tokenizer's special tokens (RL Logging Board)."""
    extra: dict = field(default_factory=dict)
    """Per-response fields that become columns: step, reward, advantage, ..."""


def detect_format(row: dict, where: str) -> str:
    """The format of a row, from its fields."""
    if "response_tokens" in row and "prompt" in row and "response" in row:
        return "rl_logging_board"
    if "prompt" in row and "completion" in row:
        return "trl"
    if "input" in row and "output" in row:
        return "verl"
    if ("prompt" in row and "response" in row) or ("prompt_ids" in row and "response_ids" in row):
        return "klviz"
    raise KlvizError(f"{where}: expected klviz's \"prompt\"/\"response\" (or \"prompt_ids\"/\"response_ids\"), "
                     "TRL's \"prompt\"/\"completion\", verl's \"input\"/\"output\" or RL Logging Board's "
                     "\"prompt\"/\"response\"/\"response_tokens\" fields.")


def _step_order(p: Path) -> tuple:
    m = re.search(r"(\d+)", p.stem)
    return (int(m.group(1)) if m else math.inf, p.name)


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise KlvizError(f"{path}: no such file or folder.")
    if not path.is_dir():
        return [path]
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".parquet")), key=_step_order)
    if not files:
        raise KlvizError(f"{path} is a folder without .jsonl or .parquet files of responses.")
    return files


def _read_rows(path: Path) -> list[tuple[str, dict]]:
    """(origin, row) for every row of a JSONL or parquet file."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's errors name its own internals; say which file
            raise KlvizError(f"{path} is not a readable parquet file ({type(e).__name__}).") from None
        if not rows:
            raise KlvizError(f"{path} has no rows.")
        return [(f"{path}, row {i}", r) for i, r in enumerate(rows, start=1)]
    try:
        return [(f"{path}, line {r.pop('_line')}", r) for r in read_jsonl(path)]
    except UnicodeDecodeError:
        raise KlvizError(f"{path} is not UTF-8 text.") from None


def read_rollouts(path: str | Path) -> tuple[str, list[Rollout]]:
    """(format, rollouts) of a file or folder of files; every row must be of the first row's format."""
    path = Path(path)
    rows = [item for f in _files(path) for item in _read_rows(f)]
    fmt = detect_format(rows[0][1], rows[0][0])
    out: list[Rollout] = []
    prompt_ids: dict[str, str] = {}
    counts: dict[str, int] = {}
    for origin, row in rows:
        if detect_format(row, origin) != fmt:
            raise KlvizError(f"{origin}: this row is not in the {fmt} format of the file's first row.")
        out.append(_rollout(fmt, row, origin, prompt_ids, counts))
    return fmt, _typed_extras(out)


def _text(row: dict, key: str, where: str) -> str:
    v = row.get(key)
    if not isinstance(v, str):
        raise KlvizError(f"{where}: \"{key}\" must be a string.")
    return v


def _chat_or_text(row: dict, key: str, where: str) -> tuple[str | None, tuple | None]:
    v = row.get(key)
    if isinstance(v, str):
        return v, None
    if isinstance(v, list):
        return None, _messages(v, where)
    raise KlvizError(f"{where}: \"{key}\" must be text or a list of {{\"role\", \"content\"}} messages.")


def _rollout(fmt: str, row: dict, where: str, prompt_ids: dict, counts: dict) -> Rollout:
    if fmt == "klviz":
        return _klviz_rollout(row, where)
    if fmt == "trl":
        text, messages = _chat_or_text(row, "prompt", where)
        done, done_msgs = _chat_or_text(row, "completion", where)
        # A chat completion is the assistant's message(s); their contents follow the generation prompt.
        response = done if done_msgs is None else "".join(dict(m)["content"] for m in done_msgs)
        prompt_key = text if messages is None else repr(messages)
        specials = False
    elif fmt == "verl":
        text, messages, response, specials = _text(row, "input", where), None, _text(row, "output", where), False
        prompt_key = text
    else:
        text, messages, response, specials = _text(row, "prompt", where), None, _text(row, "response", where), True
        prompt_key = text
    pid = prompt_ids.setdefault(prompt_key, str(len(prompt_ids)))
    sample_id = counts[pid] = counts.get(pid, -1) + 1
    prompt = Prompt(id=pid, text=text, messages=messages, origin=where)
    return Rollout(where, pid, sample_id, prompt=prompt, response=response, prompt_has_specials=specials,
                   extra=_extras(row, _KEYS[fmt]))


def _ids(row: dict, key: str, where: str) -> tuple[int, ...]:
    ids = row[key]
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise KlvizError(f"{where}: {key!r} must be a list of integer token ids.")
    return tuple(ids)


def _klviz_rollout(row: dict, where: str) -> Rollout:
    sample_id = row.get("sample_id", 0)
    if isinstance(sample_id, bool) or not isinstance(sample_id, int):
        raise KlvizError(f"{where}: \"sample_id\" must be an integer.")
    line = where.rsplit(" ", 1)[-1]
    pid = str(row.get("prompt_id", line))
    extra = _extras(row, _KEYS["klviz"])
    if "prompt_ids" in row and "response_ids" in row:
        return Rollout(where, pid, sample_id, prompt_ids=_ids(row, "prompt_ids", where),
                       response_ids=_ids(row, "response_ids", where), extra=extra)
    if not (isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str)):
        raise KlvizError(f"{where}: expected string fields \"prompt\" and \"response\" "
                         "or integer lists \"prompt_ids\" and \"response_ids\".")
    return Rollout(where, pid, sample_id, prompt=Prompt(id=pid, text=row["prompt"], origin=where),
                   response=row["response"], extra=extra)


def _extras(row: dict, used: tuple[str, ...]) -> dict:
    """The row's other scalar fields, named as columns (a reserved name gets "_logged")."""
    out = {}
    for k, v in row.items():
        if k in used or isinstance(v, (list, dict)) or v is None:
            continue
        out[f"{k}_logged" if k in RESERVED else k] = v
    return out


def _column_type(values: list):
    """int, float, bool or str: the one type a column of these values is written as."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return bool
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return int
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return float
    if present and all(isinstance(v, str) and re.fullmatch(r"-?\d+", v) for v in present):
        return int  # TRL's wandb table logs the step as a string
    return str


def _typed_extras(rollouts: list[Rollout]) -> list[Rollout]:
    """Give each extra column one type across rows, so the parquet column has one."""
    keys = sorted({k for r in rollouts for k in r.extra})
    types = {k: _column_type([r.extra.get(k) for r in rollouts]) for k in keys}
    for r in rollouts:
        fixed = {k: (None if r.extra.get(k) is None else types[k](r.extra[k])) for k in keys}
        r.extra.clear()
        r.extra.update(fixed)
    return rollouts


def encode(rollout: Rollout, tokenizer) -> tuple[list[int], list[int]]:
    """(prompt_ids, response_ids) of a rollout, as `klviz score` tokenizes: the prompt with the
    tokenizer's special tokens (unless its text holds them already) or its chat template, the response
    without, appended to the prompt's ids."""
    if rollout.prompt_ids is not None:
        return list(rollout.prompt_ids), list(rollout.response_ids)
    p = rollout.prompt
    if p.messages is None and rollout.prompt_has_specials:
        prompt_ids = list(tokenizer(p.text, add_special_tokens=False)["input_ids"])
    else:
        prompt_ids = p.token_ids(tokenizer)
    return prompt_ids, list(tokenizer(rollout.response, add_special_tokens=False)["input_ids"])


def score_inputs(rollouts: list[Rollout], tokenizer):
    """ScoreInputs for the engine (extra -> columns); an empty response is an error naming its line."""
    from klviz.engine.divergence import ScoreInput

    out = []
    for r in rollouts:
        prompt_ids, response_ids = encode(r, tokenizer)
        if not response_ids:
            raise KlvizError(f"{r.origin}: the response is empty, so there is no token to score.")
        if not prompt_ids:
            raise KlvizError(f"{r.origin}: the prompt encodes to no tokens, and the first response token "
                             "needs at least one before it.")
        out.append(ScoreInput(prompt_ids, response_ids, r.prompt_id, r.sample_id, extra=dict(r.extra)))
    return out


def read_score_inputs(path: str | Path, tokenizer) -> list:
    """read_rollouts, then score_inputs: a responses file as the engine's ScoreInputs."""
    return score_inputs(read_rollouts(path)[1], tokenizer)
