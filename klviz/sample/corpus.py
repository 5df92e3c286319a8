"""A small deterministic grammar of restaurant and hotel reviews: the SFT model's training text.

A review is "Review:" and one to three clauses ("the room was very clean", "the staff were not
friendly") joined by connectives, then an optional closing remark and a full stop. Adjectives come
from `klviz.ppo.lexicon`, drawn so that most reviews are neutral or mixed: the `sentiment` reward then
has room to move a policy toward praise (more positive words, more intensifiers, fewer negations),
which is the drift the sample data is meant to show.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from klviz.ppo.lexicon import INTENSIFIERS, NEGATIVE, NEUTRAL, POSITIVE

PREFIX = "Review:"
"""Every review and every prompt starts with this."""

# Subjects by kind; each kind has its own adjectives so that "the coffee was rude" never occurs.
SUBJECTS: dict[str, tuple[str, ...]] = {
    "food": ("the food", "the breakfast", "the coffee", "the dessert", "the soup", "the bread",
             "the pasta", "the portions", "the menu"),
    "people": ("the staff", "the waiter", "the manager", "the service", "the receptionist",
               "the owner", "the cleaners"),
    "place": ("the room", "the bed", "the bathroom", "the lobby", "the view", "the pool",
              "the location", "the hotel", "the restaurant", "the terrace", "the bar"),
}
PLURAL = frozenset({"the portions", "the staff", "the cleaners"})
"""Subjects that take "were"/"are"."""

ADJECTIVES: dict[str, dict[str, tuple[str, ...]]] = {
    "food": {
        "positive": ("good", "great", "excellent", "delicious", "fresh", "tasty", "superb", "generous",
                     "perfect", "amazing", "fantastic", "nice", "lovely", "wonderful"),
        "negative": ("bad", "terrible", "awful", "bland", "stale", "greasy", "soggy", "overpriced",
                     "mediocre", "disappointing", "poor", "horrible", "dreadful", "boring"),
        "neutral": ("okay", "fine", "average", "ordinary", "typical", "simple", "basic", "standard",
                    "plain", "small", "large", "warm", "usual"),
    },
    "people": {
        "positive": ("friendly", "helpful", "attentive", "welcoming", "charming", "great", "good",
                     "excellent", "lovely", "wonderful", "fantastic", "pleasant", "generous"),
        "negative": ("rude", "slow", "careless", "unpleasant", "terrible", "awful", "poor", "bad",
                     "disappointing", "horrible", "dreadful", "boring", "gloomy"),
        "neutral": ("okay", "fine", "busy", "quiet", "typical", "average", "ordinary", "new",
                    "usual", "standard"),
    },
    "place": {
        "positive": ("clean", "comfortable", "cozy", "spotless", "beautiful", "charming", "lovely",
                     "pleasant", "nice", "great", "perfect", "amazing", "superb", "welcoming"),
        "negative": ("dirty", "noisy", "cramped", "smelly", "sticky", "broken", "gloomy", "awful",
                     "terrible", "overpriced", "unpleasant", "poor", "bad", "horrible"),
        "neutral": ("okay", "fine", "small", "large", "busy", "quiet", "modern", "old", "new", "bright",
                    "dark", "simple", "basic", "plain", "ordinary", "average"),
    },
}
INTENSIFIER_WORDS = tuple(sorted(INTENSIFIERS))
NEGATIONS = ("not", "never", "hardly", "not at all")
CONNECTIVES = (" , and", " but", " .", " , although", " ;", " , while", " and")
CLOSINGS = (
    " . we would come back", " . we might return", " . nothing more to say", " . it was our first visit",
    " . we stayed two nights", " . we came for lunch", " . overall it was okay", " . i would not return",
    " . i would recommend it", " . we left early",
)
VERBS_SINGULAR = ("was", "was", "was", "is", "seemed", "felt", "looked")
VERBS_PLURAL = ("were", "were", "were", "are", "seemed", "felt", "looked")
NEGATABLE_VERBS = frozenset({"was", "is", "were", "are"})
"""Only forms of "to be" take a negation: "was not clean", never "felt not clean"."""


@dataclass(frozen=True)
class GrammarConfig:
    """Probabilities of the review grammar. The defaults give mostly neutral or mixed reviews."""

    p_neutral: float = 0.5
    """Chance an adjective is neutral."""
    p_positive: float = 0.27
    """Chance an adjective is positive (the rest are negative)."""
    p_intensifier: float = 0.15
    """Chance an adjective gets an intensifier ("very clean")."""
    p_negation: float = 0.2
    """Chance a clause with a form of "to be" is negated ("was not clean")."""
    p_second_adjective: float = 0.3
    """Chance a clause has two adjectives ("clean and quiet")."""
    max_clauses: int = 3
    """Clauses per review: 1 to max_clauses, uniformly."""
    p_closing: float = 0.2
    """Chance of a closing remark after the last clause."""
    p_exclamation: float = 0.1
    """Chance the review ends with " !" instead of " .". """

    def __post_init__(self) -> None:
        if not 0 <= self.p_neutral + self.p_positive <= 1:
            raise ValueError("p_neutral + p_positive must lie in [0, 1].")
        if self.max_clauses < 1:
            raise ValueError("max_clauses must be at least 1.")


def _adjective(rng: random.Random, kind: str, cfg: GrammarConfig) -> str:
    u = rng.random()
    if u < cfg.p_neutral:
        polarity = "neutral"
    elif u < cfg.p_neutral + cfg.p_positive:
        polarity = "positive"
    else:
        polarity = "negative"
    word = rng.choice(ADJECTIVES[kind][polarity])
    if polarity != "neutral" and rng.random() < cfg.p_intensifier:
        word = f"{rng.choice(INTENSIFIER_WORDS)} {word}"
    return word


def clause(rng: random.Random, cfg: GrammarConfig = GrammarConfig()) -> str:
    """One clause: subject, verb, optional negation, one or two adjectives."""
    kind = rng.choice(sorted(SUBJECTS))
    subject = rng.choice(SUBJECTS[kind])
    verb = rng.choice(VERBS_PLURAL if subject in PLURAL else VERBS_SINGULAR)
    words = [subject, verb]
    if verb in NEGATABLE_VERBS and rng.random() < cfg.p_negation:
        words.append(rng.choice(NEGATIONS))
    words.append(_adjective(rng, kind, cfg))
    if rng.random() < cfg.p_second_adjective:
        words += ["and", _adjective(rng, kind, cfg)]
    return " ".join(words)


def review(rng: random.Random, cfg: GrammarConfig = GrammarConfig()) -> str:
    """One review, e.g. "Review: the room was clean and quiet , but the staff were rude ."."""
    text = f"{PREFIX} {clause(rng, cfg)}"
    for _ in range(rng.randint(1, cfg.max_clauses) - 1):
        text += f"{rng.choice(CONNECTIVES)} {clause(rng, cfg)}"
    if rng.random() < cfg.p_closing:
        text += rng.choice(CLOSINGS)
    return text + (" !" if rng.random() < cfg.p_exclamation else " .")


def make_corpus(n: int, seed: int, cfg: GrammarConfig = GrammarConfig()) -> list[str]:
    """`n` reviews from the grammar; the same (n, seed, cfg) always gives the same list."""
    rng = random.Random(seed)
    return [review(rng, cfg) for _ in range(n)]


def all_adjectives() -> frozenset[str]:
    """Every adjective the grammar can emit."""
    return frozenset(w for pools in ADJECTIVES.values() for words in pools.values() for w in words)


def check_lexicon() -> None:
    """Raise if an adjective pool disagrees with klviz.ppo.lexicon (a word in the wrong polarity)."""
    lists = {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}
    for kind, pools in ADJECTIVES.items():
        for polarity, words in pools.items():
            wrong = set(words) - lists[polarity]
            if wrong:
                raise ValueError(f"{kind}/{polarity} adjectives not in lexicon.{polarity.upper()}: {wrong}")


def _alternation(words) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


def _clause_pattern(kind: str, plural: bool) -> str:
    subjects = [s for s in SUBJECTS[kind] if (s in PLURAL) == plural]
    if not subjects:
        return ""
    verbs = VERBS_PLURAL if plural else VERBS_SINGULAR
    pools = ADJECTIVES[kind]
    polar = _alternation(pools["positive"] + pools["negative"])
    adjective = f"(?:(?:{_alternation(INTENSIFIER_WORDS)} )?{polar}|{_alternation(pools['neutral'])})"
    be_verbs = [v for v in set(verbs) if v in NEGATABLE_VERBS]
    other_verbs = [v for v in set(verbs) if v not in NEGATABLE_VERBS]
    verb = f"(?:{_alternation(be_verbs)}(?: {_alternation(NEGATIONS)})?|{_alternation(other_verbs)})"
    return f"{_alternation(subjects)} {verb} {adjective}(?: and {adjective})?"


@functools.lru_cache(maxsize=1)
def review_regex() -> re.Pattern:
    """A regex that accepts exactly the reviews the grammar can write (any number of clauses)."""
    clauses = [_clause_pattern(k, plural) for k in SUBJECTS for plural in (False, True)]
    clause_re = "(?:" + "|".join(c for c in clauses if c) + ")"
    return re.compile(
        f"{re.escape(PREFIX)} {clause_re}(?:{_alternation(CONNECTIVES)} {clause_re})*"
        f"{_alternation(CLOSINGS)}? [.!]"
    )


def is_review(text: str) -> bool:
    """Whether `text` is a complete review the grammar could have written (the fluency check)."""
    return review_regex().fullmatch(text.strip()) is not None
