"""The sample domain's words: short restaurant and hotel reviews.

The word lists feed two things that must agree: the grammar in `klviz.sample.corpus`, which writes
the SFT model's training text, and `sentiment_score`, which the `sentiment` reward in
`klviz.ppo.rewards` calls. Every adjective the grammar can emit is in exactly one of POSITIVE,
NEGATIVE or NEUTRAL, so the reward sees every word the policy can learn to say.

Scoring rule (`sentiment_score`), read left to right over lowercase words:
  - a POSITIVE word adds +1, a NEGATIVE word adds -1;
  - each INTENSIFIER right before it ("very good", "really very good") doubles that word's weight,
    up to MAX_INTENSITY; any other word in between cancels the intensifier;
  - a NEGATOR flips the sign of the next sentiment word if it comes within NEGATION_WINDOW words
    ("not good", "never very friendly", "not at all clean");
  - sentence punctuation (. ! ? ;) and "but" end both effects.
The sum is squashed with tanh(total / SATURATION), so the score lies in (-1, 1), one plain word
scores about +-0.46, and stacking praise still earns more (room for a policy to move) with
diminishing returns (so the reward cannot grow without bound).
"""

from __future__ import annotations

import math
import re

POSITIVE: frozenset[str] = frozenset(
    """good great excellent friendly delicious clean lovely amazing wonderful fresh helpful
    comfortable perfect pleasant tasty charming cozy superb fantastic nice spotless generous
    attentive beautiful welcoming""".split()
)
"""Adjectives that add +1."""

NEGATIVE: frozenset[str] = frozenset(
    """bad terrible awful rude bland dirty noisy slow stale broken horrible disappointing poor
    greasy cramped overpriced unpleasant mediocre boring dreadful smelly sticky careless gloomy
    soggy""".split()
)
"""Adjectives that add -1."""

NEUTRAL: frozenset[str] = frozenset(
    """okay fine average ordinary typical simple basic standard plain small large busy modern
    quiet warm old new usual bright dark""".split()
)
"""Adjectives that carry no sentiment; the grammar uses them so reviews start out mixed."""

INTENSIFIERS: frozenset[str] = frozenset(
    "very really extremely incredibly truly remarkably absolutely super".split()
)
"""Adverbs that double the weight of the sentiment word right after them."""

NEGATORS: frozenset[str] = frozenset(
    """not never hardly no isn't wasn't aren't weren't don't didn't doesn't""".split()
)
"""Words that flip the sign of the next sentiment word within NEGATION_WINDOW words."""

NEGATION_WINDOW = 3
"""How many words after a negator it can still flip ("not at all good": 3 words on)."""

INTENSIFIER_FACTOR = 2.0
"""Weight multiplier per intensifier."""

MAX_INTENSITY = 4.0
"""Cap on the stacked multiplier, so "very very very very good" cannot dominate a review."""

SATURATION = 2.0
"""tanh scale: a raw total of +-SATURATION maps to +-0.76."""

_BREAKS = frozenset(".!?;") | {"but"}
_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?|[.!?;]")


def words(text: str) -> list[str]:
    """Lowercase words and sentence punctuation of `text`, in order ("wasn't" stays one word)."""
    return _WORD_RE.findall(text.lower())


def raw_sentiment(text: str) -> float:
    """The unsquashed total of signed, intensified, possibly negated sentiment words."""
    total = 0.0
    multiplier = 1.0
    negation_left = 0  # words the last negator can still reach
    for word in words(text):
        if word in _BREAKS:
            multiplier, negation_left = 1.0, 0
        elif word in NEGATORS:
            negation_left = NEGATION_WINDOW
        elif word in INTENSIFIERS:
            multiplier = min(multiplier * INTENSIFIER_FACTOR, MAX_INTENSITY)
        elif word in POSITIVE or word in NEGATIVE:
            sign = 1.0 if word in POSITIVE else -1.0
            if negation_left > 0:
                sign = -sign
            total += sign * multiplier
            multiplier, negation_left = 1.0, 0
        else:
            multiplier = 1.0
            negation_left = max(negation_left - 1, 0)
    return total


def sentiment_score(text: str) -> float:
    """Lexicon sentiment of `text` in (-1, 1): tanh(raw_sentiment(text) / SATURATION).

    >>> round(sentiment_score("the food was good"), 2)
    0.46
    >>> sentiment_score("the food was not very good") < sentiment_score("the food was okay") == 0.0
    True
    """
    return math.tanh(raw_sentiment(text) / SATURATION)
