"""exact_match: table-driven cases, one comment per case."""

import pytest

from grpo_kit.registry import get_reward, reward_scope
from rewards.match import exact_match

CASES = [
    # (completion, gold, settings, expected)
    ("8", "8", {}, 1.0),  # identical
    ("  8\n", "8", {}, 1.0),  # surrounding whitespace stripped
    ("1 2", "12", {}, 1.0),  # inner whitespace ignored by default
    ("1 2", "12", {"ignore_space": False}, 0.0),  # ... unless ignore_space=False
    (" 12 ", "12", {"ignore_space": False}, 1.0),  # stripping happens regardless
    ("PARIS", "paris", {}, 1.0),  # case ignored by default
    ("PARIS", "paris", {"ignore_case": False}, 0.0),  # ... unless ignore_case=False
    ("12", "13", {}, 0.0),  # wrong answer
    ("", "0", {}, 0.0),  # empty completion
    ("<answer>8</answer>", "8", {}, 0.0),  # no extraction: the whole completion must match
    ("8", 8, {}, 1.0),  # a numeric gold is compared as its text
    ([{"role": "assistant", "content": "8"}], "8", {}, 1.0),  # chat completion: assistant text
]


@pytest.mark.parametrize("completion,gold,settings,expected", CASES)
def test_exact_match_cases(completion, gold, settings, expected):
    assert exact_match([completion], answer=[gold], **settings) == [expected]


def test_missing_gold_is_none():
    # None means "does not apply", never 0
    assert exact_match(["8"], answer=[None]) == [None]


def test_length_mismatch_is_loud():
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        exact_match(["1", "2"], answer=["1"])


def test_registered_as_item_reward():
    fn = get_reward("exact_match")
    assert fn is exact_match and reward_scope(fn) == "item"
