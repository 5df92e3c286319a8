"""klviz.ppo.lexicon: the word lists and the lexicon sentiment score."""

import math

import pytest

from klviz.ppo import lexicon
from klviz.ppo.lexicon import raw_sentiment, sentiment_score

LISTS = {
    "POSITIVE": lexicon.POSITIVE,
    "NEGATIVE": lexicon.NEGATIVE,
    "NEUTRAL": lexicon.NEUTRAL,
    "INTENSIFIERS": lexicon.INTENSIFIERS,
    "NEGATORS": lexicon.NEGATORS,
}


def test_lists_are_disjoint_lowercase_frozensets():
    names = list(LISTS)
    for name, words in LISTS.items():
        assert isinstance(words, frozenset) and words, name
        assert all(w == w.lower() and w.strip() == w for w in words), name
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not LISTS[a] & LISTS[b], (a, b, LISTS[a] & LISTS[b])


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("the food was good", 1.0),
        ("the food was bad", -1.0),
        ("the food was okay", 0.0),
        ("", 0.0),
        ("the food was very good", 2.0),
        ("the food was really very good", 4.0),
        ("the food was very very very very good", lexicon.MAX_INTENSITY),
        ("the food was not good", -1.0),
        ("the food was not very good", -2.0),
        ("the staff were never rude", 1.0),
        ("the room wasn't clean", -1.0),
        ("the room was not at all clean", -1.0),
        # the negator's window has run out after NEGATION_WINDOW other words
        ("not that the room in the hotel was clean", 1.0),
        # punctuation and "but" end a negation or an intensifier
        ("the food was not great . the staff were friendly", 0.0),
        ("the food was not bad but the staff were rude", 0.0),
        ("very . good", 1.0),
        # an intensifier only reaches the word right after it
        ("very much good", 1.0),
        ("The Food Was GOOD!", 1.0),
        ("good, friendly and clean", 3.0),
    ],
)
def test_raw_sentiment_rules(text, raw):
    assert raw_sentiment(text) == raw


def test_negation_flips_only_the_next_sentiment_word():
    assert raw_sentiment("not good and friendly") == 0.0  # -1 + 1


def test_score_is_tanh_of_raw_and_bounded():
    for text in ["good", "very good", "good good good good good good good", "awful " * 50]:
        s = sentiment_score(text)
        assert -1.0 <= s <= 1.0
        assert s == pytest.approx(math.tanh(raw_sentiment(text) / lexicon.SATURATION))


def test_score_is_monotone_in_praise():
    ladder = ["the room was bad", "the room was okay", "the room was good",
              "the room was very good", "the room was very good and very clean"]
    scores = [sentiment_score(t) for t in ladder]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    assert sentiment_score("the food was good") == pytest.approx(math.tanh(0.5))
