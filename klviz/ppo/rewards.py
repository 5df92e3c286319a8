"""The reward registry: a name -> a callable scoring (prompts, responses) -> Float[B].

Names (REWARD_FORMS):
  sentiment         klviz.ppo.lexicon.sentiment_score of prompt + response (the sample domain's reward;
                    the prompt is included so "the staff were not" + " friendly" reads as negated)
  length            number of response tokens under the policy's tokenizer
  keyword:WORD      1.0 if WORD occurs in the response as a whole word (case-insensitive), else 0.0
  module:function   an importable Python callable taking (prompts, responses), returning B numbers
  FOLDER            a local Hugging Face sequence-classification model whose tokenizer is the policy's

The last two run code (an import, or a model's files); the CLI offers them, the dashboard only when
its owner started it with --allow-code (klviz.server_options): `check_allowed` decides from the name
alone, before anything is imported or any path is looked at.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Callable, Protocol

import torch

from klviz.errors import KlvizError

REWARD_FORMS = "sentiment, length, keyword:WORD, module:function, or a local reward-model folder"
SAFE_FORMS = "sentiment, length or keyword:WORD"
CODE_SENTENCE = ("runs code (a module:function or a reward-model folder), which this dashboard does not allow: "
                 "use " + SAFE_FORMS + ", or ask its owner to start it with --allow-code")
UNKNOWN_SENTENCE = ("use " + SAFE_FORMS + " (a reward-model folder or module:function runs code, "
                    "which this dashboard takes only when its owner starts it with --allow-code)")
_MODULE_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Reward(Protocol):
    """reward(prompts, responses) -> Float[B]: one score per (prompt, response) pair."""

    name: str

    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor: ...


class FunctionReward:
    """Wraps a per-batch Python function and checks what it returns."""

    def __init__(self, name: str, fn: Callable[[list[str], list[str]], object]):
        self.name, self._fn = name, fn

    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        try:
            out = self._fn(list(prompts), list(responses))
        except KlvizError:
            raise
        except Exception as e:  # a user's function: report it in one line, not a traceback
            raise KlvizError(f"Reward {self.name!r} failed: {type(e).__name__}: {e}") from None
        try:
            scores = torch.as_tensor(out, dtype=torch.float32).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise KlvizError(f"Reward {self.name!r} returned {type(out).__name__}, "
                             "not a list or tensor of numbers.") from None
        if scores.numel() != len(responses):
            raise KlvizError(f"Reward {self.name!r} returned {scores.numel()} scores "
                             f"for {len(responses)} responses: return one number per response.")
        if not torch.isfinite(scores).all():
            raise KlvizError(f"Reward {self.name!r} returned a NaN or infinite score: return finite numbers.")
        return scores


def _sentiment(prompts: list[str], responses: list[str]) -> list[float]:
    from klviz.ppo.lexicon import sentiment_score

    return [sentiment_score(p + r) for p, r in zip(prompts, responses)]


def _length(tokenizer) -> Callable[[list[str], list[str]], list[float]]:
    def length(prompts: list[str], responses: list[str]) -> list[float]:
        return [float(len(tokenizer(r, add_special_tokens=False).input_ids)) for r in responses]
    return length


def _keyword(word: str) -> Callable[[list[str], list[str]], list[float]]:
    pattern = re.compile(rf"(?<!\w){re.escape(word.lower())}(?!\w)")

    def keyword(prompts: list[str], responses: list[str]) -> list[float]:
        return [1.0 if pattern.search(r.lower()) else 0.0 for r in responses]
    return keyword


def _import_callable(name: str) -> Callable:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise KlvizError(f"Reward {name!r}: cannot import module {module_name!r} ({e}).") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise KlvizError(f"Reward {name!r}: module {module_name!r} has no callable {attr!r}.")
    return fn


class RewardModel:
    """A local sequence-classification model scoring prompt + response.

    A single-label head's logit is the score; a multi-label head's score is the log-probability of
    its last label (e.g. "positive"). Runs on CPU under no_grad, in batches of `batch_size`.
    """

    def __init__(self, folder: Path, tokenizer, batch_size: int = 32):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.batch_size = str(folder), batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), local_files_only=True).eval()
        except (OSError, ValueError) as e:
            raise KlvizError(f"Reward model folder {folder} could not be loaded as a sequence-classification "
                             f"model with its tokenizer ({str(e).splitlines()[0]}).") from None
        from klviz.models import tokenizer_difference

        diff = tokenizer_difference(tokenizer, self.tokenizer, pad_may_be_missing=True)
        if diff:
            raise KlvizError(f"Reward model {folder} has a different tokenizer from the policy ({diff}): "
                             "use a reward model trained with the policy's tokenizer.")
        if self.tokenizer.pad_token_id is None:  # our own copy: safe to set
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        texts = [p + r for p, r in zip(prompts, responses)]
        out = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[s:s + self.batch_size], return_tensors="pt", padding=True)
            logits = self.model(**enc).logits.float()  # (b, num_labels)
            out.append(logits[:, 0] if logits.shape[1] == 1 else torch.log_softmax(logits, -1)[:, -1])
        return torch.cat(out)


def runs_code(name: str) -> bool:
    """Whether the reward `name` would import a module or load a model folder (decided from the name only)."""
    name = name.strip()
    return not (name in ("sentiment", "length") or name.startswith("keyword:"))


def check_allowed(name: str, allow_code: bool) -> None:
    """KlvizError, before anything runs, for a reward that runs code when code is not allowed."""
    if not allow_code and isinstance(name, str) and name.strip() and runs_code(name):
        name = name.strip()
        if _MODULE_FUNCTION.match(name) or "/" in name or "\\" in name:  # plainly code, or a folder's path
            raise KlvizError(f"Reward {name!r} {CODE_SENTENCE}.")
        raise KlvizError(f"Unknown reward {name!r}: {UNKNOWN_SENTENCE}.")  # decided from the name: no lookup


def check_reward(name: str, allow_code: bool) -> None:
    """KlvizError for what `get_reward` would refuse from the name alone (empty, code without `allow_code`, a
    keyword without its word), before any run starts or anything is loaded."""
    if not isinstance(name, str) or not name.strip():
        raise KlvizError(f"The reward name is empty: use {REWARD_FORMS}.")
    check_allowed(name, allow_code)
    name = name.strip()
    if name.startswith("keyword:") and not name[len("keyword:"):].strip():
        raise KlvizError("Reward 'keyword:' needs a word after the colon, e.g. keyword:delicious.")


def get_reward(name: str, tokenizer, allow_code: bool = True) -> Reward:
    """The reward called `name` (forms in the module docstring); KlvizError if there is none, or if it runs
    code and `allow_code` is False (the dashboard without --allow-code)."""
    check_reward(name, allow_code)
    name = name.strip()
    if name == "sentiment":
        return FunctionReward(name, _sentiment)
    if name == "length":
        return FunctionReward(name, _length(tokenizer))
    if name.startswith("keyword:"):
        return FunctionReward(name, _keyword(name[len("keyword:"):].strip()))
    path = Path(name).expanduser()
    if path.is_dir():
        return RewardModel(path, tokenizer)
    if _MODULE_FUNCTION.match(name):
        return FunctionReward(name, _import_callable(name))
    raise KlvizError(f"Unknown reward {name!r}: use {REWARD_FORMS}.")

