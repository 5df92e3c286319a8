"""Prompts: read a prompts file (JSONL `prompt` or chat `messages`, or .txt), and show a prompt as text.

A text prompt is encoded with the tokenizer's special tokens (e.g. BOS); a chat prompt is rendered
with the tokenizer's chat template (add_generation_prompt=True) and encoded without adding special
tokens, since the template writes its own (as apply_chat_template does). No torch at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from klviz.errors import KlvizError
from klviz.io import read_jsonl


@dataclass(frozen=True)
class Prompt:
    """One prompt: plain `text`, or a chat as `messages`.

    `messages` is a sequence of {"role": ..., "content": ...} mappings; read_prompts stores each as a
    tuple of (key, value) pairs so a Prompt is hashable (the dashboard caches on it).
    """

    id: str
    text: str | None = None
    messages: tuple | None = None
    origin: str = ""
    """Where it came from, for error messages: "prompts.jsonl, line 3"."""

    def token_ids(self, tokenizer) -> list[int]:
        """The prompt's ids: text with special tokens; a chat via the tokenizer's template."""
        if self.messages is None:
            return list(tokenizer(self.text).input_ids)
        if not getattr(tokenizer, "chat_template", None):
            raise KlvizError(f"{self.origin or self.id}: the prompt is a chat (messages) but the tokenizer "
                             "has no chat template, so give a plain `prompt` instead.")
        rendered = tokenizer.apply_chat_template([dict(m) for m in self.messages], tokenize=False,
                                                 add_generation_prompt=True)
        return list(tokenizer(rendered, add_special_tokens=False).input_ids)


def read_prompts(path) -> list[Prompt]:
    """Prompts from JSONL (`prompt` or `messages`, optional `id`) or .txt (one prompt per line)."""
    path = Path(path)
    try:
        prompts = _read_txt(path) if path.suffix.lower() == ".txt" else _read_jsonl_prompts(path)
    except UnicodeDecodeError:
        raise KlvizError(f"{path} is not UTF-8 text.") from None
    seen: dict[str, str] = {}
    for p in prompts:
        if p.id in seen:
            raise KlvizError(f"{p.origin}: id {p.id!r} was already used at {seen[p.id]}; ids must be unique.")
        seen[p.id] = p.origin
    return prompts


def _read_txt(path: Path) -> list[Prompt]:
    if not path.is_file():
        raise KlvizError(f"{path}: no such file." if not path.exists() else f"{path} is not a file.")
    lines = path.read_text(encoding="utf-8").splitlines()
    prompts = [Prompt(id=str(n), text=line, origin=f"{path}, line {n}")
               for n, line in enumerate(lines, start=1) if line.strip()]
    if not prompts:
        raise KlvizError(f"{path} is empty: it needs at least one prompt, one per line.")
    return prompts


def _read_jsonl_prompts(path: Path) -> list[Prompt]:
    prompts = []
    for row in read_jsonl(path):
        where = f"{path}, line {row['_line']}"
        has_text, has_chat = "prompt" in row, "messages" in row
        if has_text == has_chat:
            raise KlvizError(f"{where}: give either `prompt` (text) or `messages` (a chat), "
                             f"not {'both' if has_text else 'neither'}.")
        raw_id = row.get("id", row["_line"])
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise KlvizError(f"{where}: `id` must be a string or an integer.")
        if has_text:
            if not isinstance(row["prompt"], str) or not row["prompt"]:
                raise KlvizError(f"{where}: `prompt` must be a non-empty string.")
            prompts.append(Prompt(id=str(raw_id), text=row["prompt"], origin=where))
        else:
            prompts.append(Prompt(id=str(raw_id), messages=_messages(row["messages"], where), origin=where))
    return prompts


def _messages(raw, where: str) -> tuple:
    ok = isinstance(raw, list) and raw and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in raw)
    if not ok:
        raise KlvizError(f"{where}: `messages` must be a non-empty list of "
                         '{"role": "...", "content": "..."} objects.')
    return tuple((("role", m["role"]), ("content", m["content"])) for m in raw)


def prompt_text(prompt: Prompt) -> str:
    """A prompt as plain text, for display and for PPO: its text, or one "role: content" line per message."""
    if prompt.messages is None:
        return prompt.text or ""
    return "\n".join(f"{m['role']}: {m['content']}" for m in map(dict, prompt.messages))
