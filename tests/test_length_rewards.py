"""Length rewards: hand-computed values, units, correctness sources, Kimi grouping."""

import math

import pytest

import rewards.math
from grpo_kit.registry import get_reward, reward_scope
from rewards.length import (
    completion_lengths,
    cosine_length,
    kimi_length_penalty,
    length_limit,
    overlong_punishment,
)


def x(n: int) -> str:
    return "x" * n


UNIT_CASES = [
    # (completions, completion_ids, unit, expected lengths)
    (["ab c", "d"], None, "auto", [4, 1]),  # no ids: characters
    (["ab c", "d"], [[1, 2, 3], [4]], "auto", [3, 1]),  # ids given: tokens
    (["ab c", "d"], [[1, 2, 3], [4]], "chars", [4, 1]),  # explicit chars ignore the ids
    (["ab c", "d"], [[1, 2, 3], [4]], "words", [2, 1]),  # words: whitespace split
    (["ab c", "d"], [[1, 2, 3], [4]], "tokens", [3, 1]),  # explicit tokens
    ([[{"role": "assistant", "content": "ab c"}]], None, "chars", [4]),  # chat completion: its text
    (["", "  "], None, "words", [0, 0]),  # empty and blank
]


@pytest.mark.parametrize("completions,ids,unit,expected", UNIT_CASES)
def test_completion_lengths(completions, ids, unit, expected):
    assert completion_lengths("t", completions, ids, unit) == expected


UNIT_ERRORS = [
    # (completion_ids, unit, error fragment)
    (None, "tokens", "needs the 'completion_ids' column"),  # tokens asked for, none given
    ([[1], None], "tokens", "one id list per completion"),  # a missing row
    ([[1]], "tokens", "one id list per completion"),  # wrong number of rows
    (None, "bytes", "unknown unit 'bytes'"),  # unknown unit
]


@pytest.mark.parametrize("ids,unit,fragment", UNIT_ERRORS)
def test_completion_lengths_errors(ids, unit, fragment):
    with pytest.raises(ValueError, match=fragment):
        completion_lengths("length_limit", ["a", "b"], ids, unit)


LIMIT_CASES = [
    # (length, penalty, expected) with max_length 10
    (0, 0.0, 1.0),  # empty is within the limit
    (10, 0.0, 1.0),  # exactly at the limit
    (11, 0.0, 0.0),  # one over
    (11, -1.0, -1.0),  # one over, with a penalty
]


@pytest.mark.parametrize("n,penalty,expected", LIMIT_CASES)
def test_length_limit(n, penalty, expected):
    assert length_limit([x(n)], max_length=10, penalty=penalty) == [expected]


OVERLONG_CASES = [
    # (length, expected) with max_length 100, cache_length 20: soft interval (80, 100]
    (0, 0.0),  # short
    (80, 0.0),  # at L_max - L_cache: still no punishment
    (81, -1 / 20),  # first step into the soft interval
    (90, -0.5),  # halfway
    (100, -1.0),  # at L_max
    (101, -1.0),  # beyond L_max
]


@pytest.mark.parametrize("n,expected", OVERLONG_CASES)
def test_overlong_punishment(n, expected):
    assert overlong_punishment([x(n)], max_length=100, cache_length=20) == [pytest.approx(expected)]


def test_overlong_punishment_on_tokens():
    # the token count decides, not the text
    ids = [[0] * 85, [0] * 10]
    assert overlong_punishment(["a", "b"], completion_ids=ids, max_length=100, cache_length=20) == [-0.25, 0.0]


def test_overlong_is_continuous_and_monotone():
    scores = overlong_punishment([x(n) for n in range(0, 130)], max_length=100, cache_length=20)
    assert all(b <= a for a, b in zip(scores, scores[1:]))
    assert scores[80] == 0.0 and scores[100] == -1.0


SETTING_ERRORS = [
    # (function, settings, error fragment)
    (length_limit, {}, "length_limit: the setting 'max_length'"),  # required
    (length_limit, {"max_length": 0}, "positive integer"),  # not positive
    (overlong_punishment, {"max_length": 10}, "'cache_length'"),  # cache length required
    (overlong_punishment, {"max_length": 10, "cache_length": 11}, "exceeds max_length"),  # cache > max
    (cosine_length, {"correct": [True]}, "cosine_length: the setting 'max_length'"),  # required
    (cosine_length, {"correct": [True], "max_length": 5, "min_value_correct": 2.0}, "exceeds max_value_correct"),
    (cosine_length, {"correct": [True], "max_length": 5, "min_value_wrong": 0.0}, "exceeds max_value_wrong"),
    (cosine_length, {"max_length": 5}, "needs the 'answer' column"),  # no way to tell correctness
    (kimi_length_penalty, {}, "kimi_length_penalty: needs the 'answer' column"),  # same
    (kimi_length_penalty, {"correct": ["yes"]}, "booleans or None"),  # bad correctness values
    (length_limit, {"max_length": 5, "unit": "tokens"}, "length_limit: unit='tokens' needs"),  # no ids
]


@pytest.mark.parametrize("fn,settings,fragment", SETTING_ERRORS)
def test_setting_errors(fn, settings, fragment):
    with pytest.raises(ValueError, match=fragment):
        fn(["a"], **settings)


def _cos_expected(n, lo, hi, l_max=100):
    return lo + (hi - lo) * (1 + math.cos(math.pi * min(n, l_max) / l_max)) / 2


COSINE_CASES = [
    # (length, correct, expected) with open-r1's defaults and max_length 100
    (0, True, 1.0),  # shortest correct: max_value_correct
    (50, True, 0.75),  # midway: halfway between 0.5 and 1.0
    (100, True, 0.5),  # at max_length: min_value_correct
    (250, True, 0.5),  # past max_length: clamped
    (0, False, -1.0),  # shortest wrong: min_value_wrong, the harshest
    (50, False, -0.75),  # midway
    (100, False, -0.5),  # longest wrong: max_value_wrong
    (250, False, -0.5),  # clamped
    (25, True, _cos_expected(25, 0.5, 1.0)),  # a quarter of the way: cosine, not linear
    (25, None, None),  # correctness unknown: not applicable
]


@pytest.mark.parametrize("n,correct,expected", COSINE_CASES)
def test_cosine_length(n, correct, expected):
    assert cosine_length([x(n)], correct=[correct], max_length=100) == [pytest.approx(expected)]


def test_cosine_length_exceed_penalty():
    # the paper's r_exceed replaces the clamp beyond max_length only
    out = cosine_length([x(100), x(101)], correct=[True, False], max_length=100, exceed_penalty=-10.0)
    assert out == [pytest.approx(0.5), -10.0]


def test_cosine_shorter_correct_beats_longer_and_longer_wrong_beats_shorter():
    lengths = list(range(0, 101, 5))
    right = cosine_length([x(n) for n in lengths], correct=[True] * len(lengths), max_length=100)
    wrong = cosine_length([x(n) for n in lengths], correct=[False] * len(lengths), max_length=100)
    assert all(a >= b for a, b in zip(right, right[1:]))
    assert all(a <= b for a, b in zip(wrong, wrong[1:]))
    assert min(right) > max(wrong)


def test_correctness_from_answer_column(monkeypatch):
    # without a correct column, math_accuracy on the answer column decides (None: unknown)
    calls = []

    def fake_math_accuracy(completions, answer, **_):
        calls.append((list(completions), list(answer)))
        return [None if a is None else float(c.endswith(a)) for c, a in zip(completions, answer)]

    monkeypatch.setattr(rewards.math, "math_accuracy", fake_math_accuracy)
    out = cosine_length(["is 4", "is 5", "is 6"], answer=["4", "4", None], max_length=4)
    assert out == [pytest.approx(0.5), pytest.approx(-0.5), None]
    assert calls == [(["is 4", "is 5", "is 6"], ["4", "4", None])]
    # a correct column wins over the answer column
    calls.clear()
    assert cosine_length(["is 5"], answer=["4"], correct=[True], max_length=4) == [pytest.approx(0.5)]
    assert calls == []


def test_correctness_with_the_real_math_reward():
    out = kimi_length_penalty(["The answer is \\boxed{4}.", "So \\boxed{5}, I think, after a while."], answer=["4", "4"])
    assert out == [0.5, -0.5]


KIMI_CASES = [
    # (lengths, correct, expected)
    ([10, 20, 30], [True, True, True], [0.5, 0.0, -0.5]),  # lambda from 0.5 down to -0.5
    ([10, 20, 30], [False, False, False], [0.0, 0.0, -0.5]),  # wrong: min(0, lambda)
    ([10, 30, 30], [True, True, False], [0.5, -0.5, -0.5]),  # mixed
    ([7, 7, 7], [True, False, True], [0.0, 0.0, 0.0]),  # all lengths equal: 0
    ([5], [True], [0.0]),  # a group of one
    ([10, 20, 30], [True, None, False], [0.5, None, -0.5]),  # unknown correctness still counts for min/max
]


@pytest.mark.parametrize("lengths,correct,expected", KIMI_CASES)
def test_kimi_length_penalty(lengths, correct, expected):
    assert kimi_length_penalty([x(n) for n in lengths], correct=correct) == expected


def test_kimi_groups_by_prompt_within_a_call():
    # a TRL-style batch of two prompts scores the same as one call per group
    lengths_a, correct_a = [10, 20, 30], [True, True, False]
    lengths_b, correct_b = [100, 100, 300], [True, False, True]
    per_group = kimi_length_penalty([x(n) for n in lengths_a], correct=correct_a) + kimi_length_penalty(
        [x(n) for n in lengths_b], correct=correct_b
    )
    completions = [x(n) for n in lengths_a + lengths_b]
    correct = correct_a + correct_b
    prompts = ["a"] * 3 + ["b"] * 3
    assert kimi_length_penalty(completions, correct=correct, prompt=prompts) == per_group
    assert kimi_length_penalty(completions, correct=correct, prompts=prompts) == per_group  # TRL's name
    # interleaved rows and chat prompts (unhashable lists) group the same way
    order = [0, 3, 1, 4, 2, 5]
    chat = [[{"role": "user", "content": p}] for p in prompts]
    shuffled = kimi_length_penalty(
        [completions[i] for i in order], correct=[correct[i] for i in order], prompt=[chat[i] for i in order]
    )
    assert shuffled == [per_group[i] for i in order]
    # without a prompt column the whole call is one group, so the result differs
    assert kimi_length_penalty(completions, correct=correct) != per_group


def test_kimi_on_tokens():
    # completion_ids decide the lengths when given
    out = kimi_length_penalty(["long text here", "a"], completion_ids=[[1], [1, 2, 3]], correct=[True, True])
    assert out == [0.5, -0.5]


def test_scopes():
    assert reward_scope(get_reward("kimi_length_penalty")) == "group"
    for name in ("length_limit", "overlong_punishment", "cosine_length"):
        assert reward_scope(get_reward(name)) == "item"


def test_numpy_correct_column():
    np = pytest.importorskip("numpy")
    assert kimi_length_penalty(["x", "xxx"], correct=list(np.array([True, False]))) == [0.5, -0.5]
