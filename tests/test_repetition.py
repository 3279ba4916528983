"""N-gram repetition penalty: hand-computed cases, tokens, settings, linear time."""

import time

import pytest

from grpo_kit.registry import get_reward, reward_scope
from rewards.repetition import repetition_penalty

WORD_CASES = [
    # (completion, ngram_size, expected) with max_penalty -1.0
    ("the cat sat on the mat", 3, 0.0),  # 4 trigrams, all unique
    ("a b a b a b", 2, -(1 - 2 / 5)),  # 5 bigrams, 2 unique
    ("a b a b a b", 3, -(1 - 2 / 4)),  # 4 trigrams, 2 unique
    ("go go go go", 1, -(1 - 1 / 4)),  # unigrams
    ("Go GO go", 1, -(1 - 1 / 3)),  # lower-cased before comparing
    ("a  b\n\ta b", 2, -(1 - 2 / 3)),  # any whitespace separates words
    ("a b", 3, 0.0),  # fewer words than n: no n-grams, no penalty
    ("", 3, 0.0),  # empty
]


@pytest.mark.parametrize("text,n,expected", WORD_CASES)
def test_repetition_on_words(text, n, expected):
    assert repetition_penalty([text], ngram_size=n) == [pytest.approx(expected)]


def test_max_penalty_scales():
    # the fraction of repeated n-grams times max_penalty
    assert repetition_penalty(["a b a b a b"], ngram_size=2, max_penalty=-0.5) == [pytest.approx(-0.3)]
    assert repetition_penalty(["a b a b a b"], ngram_size=2, max_penalty=0.0) == [0.0]


TOKEN_CASES = [
    # (completion_ids, ngram_size, expected)
    ([1, 2, 3, 4], 2, 0.0),  # no repeats
    ([7, 7, 7, 7, 7], 2, -(1 - 1 / 4)),  # one bigram repeated
    ([1, 2, 1, 2], 2, -(1 - 2 / 3)),  # (1,2), (2,1), (1,2)
    ([1], 2, 0.0),  # too short
]


@pytest.mark.parametrize("ids,n,expected", TOKEN_CASES)
def test_repetition_on_tokens(ids, n, expected):
    # the text is ignored: a repetitive text with distinct ids is not penalised
    assert repetition_penalty(["x x x x x"], completion_ids=[ids], ngram_size=n, on="tokens") == [
        pytest.approx(expected)
    ]


SETTING_ERRORS = [
    # (settings, error fragment)
    ({"on": "tokens"}, "on='tokens' needs the 'completion_ids' column"),  # tokens without ids
    ({"on": "chars"}, "unknown setting on='chars'"),  # unknown unit
    ({"max_penalty": 0.5}, "must be <= 0"),  # a bonus, not a penalty
    ({"ngram_size": 0}, "positive integer"),  # no such n-gram
    ({"on": "tokens", "completion_ids": [None]}, "one id list per completion"),  # a missing row
]


@pytest.mark.parametrize("settings,fragment", SETTING_ERRORS)
def test_setting_errors(settings, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        repetition_penalty(["a b c"], **settings)
    assert "repetition_penalty" in str(info.value)


def test_chat_completion_and_unknown_columns():
    chat = [[{"role": "assistant", "content": "a b a b a b"}]]
    assert repetition_penalty(chat, ngram_size=2, answer=["x"]) == repetition_penalty(["a b a b a b"], ngram_size=2)


def test_linear_time():
    # 1 MB of words and 200k token ids: one pass each
    text = " ".join(f"w{i % 5000}" for i in range(200_000))
    start = time.perf_counter()
    (words,) = repetition_penalty([text], ngram_size=3)
    (tokens,) = repetition_penalty(["x"], completion_ids=[list(range(200_000))], on="tokens", ngram_size=3)
    assert time.perf_counter() - start < 2.0
    assert words == pytest.approx(-(1 - 5000 / (200_000 - 2)))
    assert tokens == 0.0


def test_scope():
    assert reward_scope(get_reward("repetition_penalty")) == "item"


def test_tensor_and_array_ids():
    # token ids as a tensor or array count like plain ints (tensor elements hash by identity)
    torch = pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    ids = [7, 7, 7, 7, 7]
    expected = repetition_penalty(["x"], completion_ids=[ids], ngram_size=2, on="tokens")
    assert repetition_penalty(["x"], completion_ids=[torch.tensor(ids)], ngram_size=2, on="tokens") == expected
    assert repetition_penalty(["x"], completion_ids=[np.array(ids)], ngram_size=2, on="tokens") == expected
