"""Format rewards: table-driven cases, chat completions, linear time on 1 MB inputs."""

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpo_kit.registry import get_reward, reward_scope
from rewards.format import r1_format, regex_format, tag_count, think_format

R1 = "<think>\nreasoning\n</think>\n<answer>\n42\n</answer>"

THINK_CASES = [
    # (completion, prompt_has_think_open, expected)
    ("<think>reason</think>42", False, 1.0),  # one block, then an answer
    ("  \n<think>reason</think>\n42", False, 1.0),  # leading whitespace is allowed
    ("<think></think>42", False, 1.0),  # empty thinking is allowed; only the answer must be non-empty
    (R1, False, 1.0),  # the full R1 template is also a think block plus an answer
    ("<think>reason</think>", False, 0.0),  # no answer after the block
    ("<think>reason</think>  \n ", False, 0.0),  # a blank answer is no answer
    ("42", False, 0.0),  # no think block at all
    ("intro <think>reason</think>42", False, 0.0),  # must start with <think>
    ("<think>a</think><think>b</think>42", False, 0.0),  # two think blocks
    ("<think>a<think>b</think>42", False, 0.0),  # nested open tag
    ("<think>reason 42", False, 0.0),  # never closed
    ("</think><think>42", False, 0.0),  # close before open
    ("reason</think>42", True, 1.0),  # the prompt opened the block
    ("reason</think>42", False, 0.0),  # ... but only when the setting says so
    ("<think>reason</think>42", True, 0.0),  # prompt opened it: a second <think> is wrong
    ("reason</think>", True, 0.0),  # prompt opened it, still no answer
    ("", False, 0.0),  # empty completion
]


@pytest.mark.parametrize("text,think_open,expected", THINK_CASES)
def test_think_format(text, think_open, expected):
    assert think_format([text], prompt_has_think_open=think_open) == [expected]


R1_CASES = [
    # (completion, prompt_has_think_open, expected)
    (R1, False, 1.0),  # the exact template
    (R1 + "\n", False, 1.0),  # trailing whitespace after </answer> is tolerated
    ("<think>\n\n</think>\n<answer>\n\n</answer>", False, 1.0),  # empty contents, as the regex allows
    ("<think>\nmulti\nline\n</think>\n<answer>\na\nb\n</answer>", False, 1.0),  # DOTALL: newlines inside
    (R1 + " trailing text", False, 0.0),  # text after </answer>
    (" " + R1, False, 0.0),  # must start with <think>
    ("<think>reasoning</think>\n<answer>\n42\n</answer>", False, 0.0),  # missing newlines around think
    ("<think>\nreasoning\n</think><answer>\n42\n</answer>", False, 0.0),  # no newline between blocks
    ("<think>\nreasoning\n</think>\n<answer>42</answer>", False, 0.0),  # missing newlines around answer
    ("<think>\nr\n</think>\n<answer>\n1\n</answer>\n<answer>\n2\n</answer>", False, 0.0),  # two answers
    ("<think>\n<think>\n</think>\n<answer>\n1\n</answer>", False, 0.0),  # nested think
    ("<think>\nreasoning\n</think>\n42", False, 0.0),  # no answer block
    ("reasoning\n</think>\n<answer>\n42\n</answer>", True, 1.0),  # the prompt opened the think block
    (R1, True, 0.0),  # prompt opened it: the completion must not open another
    ("reasoning\n</think>\n<answer>\n42\n</answer>", False, 0.0),  # without the setting, <think> is required
]


@pytest.mark.parametrize("text,think_open,expected", R1_CASES)
def test_r1_format(text, think_open, expected):
    assert r1_format([text], prompt_has_think_open=think_open) == [expected]


TAG_CASES = [
    # (completion, prompt_has_think_open, expected)
    (R1, False, 1.0),  # all four tags once
    ("<think>\nx\n</think>\n", False, 0.5),  # think tags only
    ("<answer>\n42\n</answer>", False, 0.25),  # "\n<answer>\n" needs a newline before: only \n</answer> counts
    ("x\n<answer>\n42\n</answer>", False, 0.5),  # both answer tags
    ("<think>x</think><answer>42</answer>", False, 0.0),  # tags without the newlines count for nothing
    (R1 + R1, False, 0.0),  # every tag twice: no credit
    ("\n</answer>\n</think>\n<think>\n\n<answer>\n", False, 1.0),  # order is not checked (as open-r1)
    ("x\n</think>\n<answer>\n42\n</answer>", True, 1.0),  # prompt opened think: credit for not reopening
    (R1, True, 0.75),  # prompt opened think, completion reopened it
    ("", False, 0.0),  # empty
]


@pytest.mark.parametrize("text,think_open,expected", TAG_CASES)
def test_tag_count(text, think_open, expected):
    assert tag_count([text], prompt_has_think_open=think_open) == [expected]


REGEX_CASES = [
    # (completion, pattern, flags, expected)
    ("<answer>42</answer>", r"<answer>\d+</answer>", "s", 1.0),  # full match
    ("so <answer>42</answer>", r"<answer>\d+</answer>", "s", 0.0),  # a search hit is not a full match
    ("<a>\n1\n</a>", r"<a>.*</a>", "s", 1.0),  # DOTALL by default
    ("<a>\n1\n</a>", r"<a>.*</a>", "", 0.0),  # no DOTALL: . stops at newlines
    ("ANSWER: 3", r"answer: \d", "i", 1.0),  # IGNORECASE
    ("answer: 3", r"answer: \d", "", 1.0),  # no flags at all
]


@pytest.mark.parametrize("text,pattern,flags,expected", REGEX_CASES)
def test_regex_format(text, pattern, flags, expected):
    assert regex_format([text], pattern=pattern, flags=flags) == [expected]


BAD_REGEX_SETTINGS = [
    # (settings, error fragment)
    ({}, "'pattern' is required"),  # no pattern at all
    ({"pattern": ""}, "'pattern' is required"),  # empty pattern
    ({"pattern": "("}, "not a valid regular expression"),  # does not compile
    ({"pattern": "a", "flags": "sq"}, "unknown flag letters 'q'"),  # unknown flag
]


@pytest.mark.parametrize("settings,fragment", BAD_REGEX_SETTINGS)
def test_regex_format_bad_settings(settings, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        regex_format(["x"], **settings)
    assert "regex_format" in str(info.value)


@pytest.mark.parametrize("fn", [think_format, r1_format, tag_count])
def test_chat_completions_and_extra_columns(fn):
    # a chat completion is scored by its assistant text; unknown columns are ignored
    chat = [[{"role": "assistant", "content": R1}]]
    assert fn(chat, answer=["42"], prompt=["q"]) == fn([R1])


def test_registered_as_item_rewards():
    for name in ("think_format", "r1_format", "tag_count", "regex_format"):
        assert reward_scope(get_reward(name)) == "item"


def test_batch_equals_single_calls():
    # the rewards are elementwise: one call on all cases equals one call per case
    texts = [c[0] for c in R1_CASES]
    for fn in (think_format, r1_format, tag_count):
        assert fn(texts) == [fn([t])[0] for t in texts]


ADVERSARIAL = [
    # worst cases for naive regexes: many partial tags, ~1 MB each
    "<think>\n" + "\n</think>\n<answer>\n" * 55_000,
    "<think>\n" + "\n</think>" * 120_000 + "\n<answer>\n",
    "<think>" * 150_000,
    "\n" * 1_000_000,
    "<think>\n" + "x" * 1_000_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_linear_time_on_1mb(text):
    # each check is a handful of str.find/str.count passes: well under a second on 1 MB
    start = time.perf_counter()
    for fn in (think_format, r1_format, tag_count):
        fn([text])
        fn([text], prompt_has_think_open=True)
    assert time.perf_counter() - start < 1.0


FRAGMENTS = ["<think>", "</think>", "<answer>", "</answer>", "\n", " ", "x", "42", "<", ">", "/"]


def _reference_r1(text: str) -> float:
    # the R1 regex, matched in full after trailing whitespace, with every tag exactly once
    pattern = r"<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>"
    once = all(text.count(t) == 1 for t in ("<think>", "</think>", "<answer>", "</answer>"))
    return 1.0 if once and re.fullmatch(pattern, text.rstrip(), re.DOTALL) else 0.0


def _reference_think(text: str) -> float:
    # one think block at the start (after whitespace), then a non-blank answer
    once = text.count("<think>") == 1 and text.count("</think>") == 1
    return 1.0 if once and re.fullmatch(r"\s*<think>.*?</think>.*\S.*", text, re.DOTALL) else 0.0


_PIECES = st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join)
_TEXTS = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join),  # anything
    st.builds(  # the template with random contents, often valid
        "<think>\n{}\n</think>\n<answer>\n{}\n</answer>{}".format, _PIECES, _PIECES, st.sampled_from(["", "\n", "x"])
    ),
)


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_str_checks_agree_with_reference_regexes(text):
    # the str.find-based checks equal the (slower, backtracking) regexes they replace
    assert r1_format([text]) == [_reference_r1(text)]
    assert think_format([text]) == [_reference_think(text)]
    if "<think>" not in text:  # the prompt opened the think block: the completion is the rest
        assert r1_format([text], prompt_has_think_open=True) == [_reference_r1("<think>\n" + text)]
        assert think_format([text], prompt_has_think_open=True) == [_reference_think("<think>" + text)]
