"""The sample prompts: review beginnings for the SFT model to continue and PPO to train on."""

from __future__ import annotations

import json
from pathlib import Path

from klviz.sample.corpus import PLURAL, PREFIX, SUBJECTS

EXTRA_PROMPTS = (
    "the food was not",
    "the staff were very",
    "the room was small but",
    "the hotel was okay , and",
    "the breakfast was plain . the coffee",
)
"""Longer beginnings: mid-negation, mid-intensifier, mid-contrast, a second clause."""


def sample_prompts() -> list[dict]:
    """One prompt per subject ("Review: the room was") plus EXTRA_PROMPTS, with stable ids p00, p01, ..."""
    texts = []
    for kind in sorted(SUBJECTS):
        for subject in SUBJECTS[kind]:
            texts.append(f"{subject} {'were' if subject in PLURAL else 'was'}")
    texts += EXTRA_PROMPTS
    return [{"id": f"p{i:02d}", "prompt": f"{PREFIX} {text}"} for i, text in enumerate(texts)]


def write_prompts(prompts: list[dict], path: Path) -> None:
    """One JSON object per line."""
    with path.open("w", encoding="utf-8") as f:
        for row in prompts:
            f.write(json.dumps(row) + "\n")
