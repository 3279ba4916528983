"""Format rewards: is the completion laid out the way the prompt asked?

All four are elementwise (scope ``"item"``) and return 1.0 / 0.0 (``tag_count``: multiples of 0.25).
The tag checks use ``str.find`` / ``str.count``, so they run in linear time on any input; only
:func:`regex_format` runs a user-supplied regular expression.

R1-Zero prompts often end with ``"<think>"`` already (``"... Assistant: <think>"``), so the
completion starts *inside* the think block. The ``prompt_has_think_open`` setting says so: the
completion must then contain no ``<think>`` of its own and is checked from the think content on.
"""

from __future__ import annotations

import functools
import re

from grpo_kit.contract import completion_text, reward

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def _think_ok(text: str, prompt_has_think_open: bool) -> bool:
    if text.count(THINK_CLOSE) != 1:
        return False
    if prompt_has_think_open:
        if THINK_OPEN in text:
            return False
    elif text.count(THINK_OPEN) != 1 or not text.lstrip().startswith(THINK_OPEN):
        return False
    answer = text[text.find(THINK_CLOSE) + len(THINK_CLOSE) :]
    return answer.strip() != ""


@reward("think_format")
def think_format(completions: list, *, prompt_has_think_open: bool = False, **_) -> list[float]:
    """1.0 if the completion is one ``<think>...</think>`` block followed by a non-empty answer.

    Exactly one ``<think>`` and one ``</think>``; the completion starts with ``<think>`` (leading
    whitespace allowed); the text after ``</think>`` is not blank. The think content itself may be
    empty. With ``prompt_has_think_open=True`` the prompt opened the block, so the completion must
    contain no ``<think>`` and exactly one ``</think>``.

    >>> think_format(["<think>2+2 is 4</think> 4", "4", "<think>a</think><think>b</think> 4"])
    [1.0, 0.0, 0.0]
    >>> think_format(["2+2 is 4</think> 4"], prompt_has_think_open=True)
    [1.0]
    """
    return [1.0 if _think_ok(completion_text(c), prompt_has_think_open) else 0.0 for c in completions]


def _r1_ok(text: str, prompt_has_think_open: bool) -> bool:
    head = "" if prompt_has_think_open else THINK_OPEN + "\n"
    want_open = 0 if prompt_has_think_open else 1
    if not text.startswith(head) or text.count(THINK_OPEN) != want_open:
        return False
    if any(text.count(tag) != 1 for tag in (THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)):
        return False
    body = text[len(head) :].rstrip()
    sep = f"\n{THINK_CLOSE}\n{ANSWER_OPEN}\n"
    i = body.find(sep)
    if i < 0:
        return False
    return body[i + len(sep) :].endswith(f"\n{ANSWER_CLOSE}")


@reward("r1_format")
def r1_format(completions: list, *, prompt_has_think_open: bool = False, **_) -> list[float]:
    r"""1.0 if the completion is exactly the DeepSeek-R1 template, else 0.0.

    The template is ``<think>\n...\n</think>\n<answer>\n...\n</answer>`` (the regex
    ``<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>`` matched in full, DOTALL), checked without
    a regex. Stricter than open-r1's ``format_reward`` in two ways: each of the four tags appears
    exactly once (so ``...</answer>\n<answer>...`` is rejected), and nothing but whitespace may follow
    the final ``</answer>``. With ``prompt_has_think_open=True`` the leading ``<think>\n`` is the
    prompt's, and the completion must not contain ``<think>``.

    >>> r1_format(["<think>\n2+2\n</think>\n<answer>\n4\n</answer>", "<think>2+2</think><answer>4</answer>"])
    [1.0, 0.0]
    >>> r1_format(["2+2\n</think>\n<answer>\n4\n</answer>\n"], prompt_has_think_open=True)
    [1.0]
    """
    return [1.0 if _r1_ok(completion_text(c), prompt_has_think_open) else 0.0 for c in completions]


def _count_tags(text: str, prompt_has_think_open: bool) -> float:
    if prompt_has_think_open:
        score = 0.25 if THINK_OPEN not in text else 0.0
    else:
        score = 0.25 if text.count(THINK_OPEN + "\n") == 1 else 0.0
    for tag in (f"\n{THINK_CLOSE}\n", f"\n{ANSWER_OPEN}\n", f"\n{ANSWER_CLOSE}"):
        if text.count(tag) == 1:
            score += 0.25
    return score


@reward("tag_count")
def tag_count(completions: list, *, prompt_has_think_open: bool = False, **_) -> list[float]:
    r"""Partial format credit: 0.25 for each of ``<think>\n``, ``\n</think>\n``, ``\n<answer>\n``
    and ``\n</answer>`` that occurs exactly once (open-r1's ``tag_count_reward``; order is not
    checked). With ``prompt_has_think_open=True`` the first 0.25 is for the completion *not*
    containing ``<think>``.

    >>> tag_count(["<think>\nx\n</think>\n<answer>\n4\n</answer>", "<think>\nx\n</think>\n4", "4"])
    [1.0, 0.5, 0.0]
    """
    return [_count_tags(completion_text(c), prompt_has_think_open) for c in completions]


_FLAGS = {"a": re.ASCII, "i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


@functools.lru_cache(maxsize=64)
def _compile(pattern: str | None, flags: str) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(
            "regex_format: the setting 'pattern' is required: a regular expression the whole completion "
            "must match, e.g. args: {pattern: '<think>.*?</think>\\s*<answer>.*?</answer>'}"
        )
    bad = sorted(set(flags) - set(_FLAGS))
    if bad:
        raise ValueError(
            f"regex_format: unknown flag letters {''.join(bad)!r} in flags={flags!r}; "
            f"valid letters: {''.join(sorted(_FLAGS))} (a=ASCII, i=IGNORECASE, m=MULTILINE, s=DOTALL, x=VERBOSE)"
        )
    value = 0
    for letter in flags:
        value |= _FLAGS[letter]
    try:
        return re.compile(pattern, value)
    except re.error as e:
        raise ValueError(f"regex_format: the setting pattern={pattern!r} is not a valid regular expression: {e}") from e


@reward("regex_format")
def regex_format(completions: list, *, pattern: str | None = None, flags: str = "s", **_) -> list[float]:
    r"""1.0 if the whole completion matches ``pattern`` (``re.fullmatch``), else 0.0.

    ``flags`` is a string of letters: ``a`` ASCII, ``i`` IGNORECASE, ``m`` MULTILINE, ``s`` DOTALL
    (the default), ``x`` VERBOSE. A missing or invalid pattern raises ``ValueError``. The pattern
    comes from the config, so its running time is the config author's: avoid nested quantifiers
    such as ``(a+)+``, which backtrack exponentially (the scorer's per-item timeout is the backstop).

    >>> regex_format(["<answer>42</answer>", "the answer is 42"], pattern=r"<answer>\d+</answer>")
    [1.0, 0.0]
    """
    compiled = _compile(pattern, flags)
    return [1.0 if compiled.fullmatch(completion_text(c)) else 0.0 for c in completions]
