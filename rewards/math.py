"""``math_accuracy``: 1.0 when a completion's final answer equals the gold answer, else 0.0.

Safe by construction: model (and gold) text is never given to ``eval``, ``exec``, ``sympify``,
``parse_expr`` or ``parse_latex``. Answers are read by the bounded recursive-descent parser in
:mod:`rewards._mathparse` and compared by :mod:`rewards._matheval` (exact fractions for numbers,
evaluation at pseudo-random points for expressions). Answers over :data:`MAX_ANSWER_CHARS`
characters are compared as text only; nesting deeper than 60 levels is unparseable; integer powers
whose result would exceed ~12,000 digits are never computed.

Extraction policy (:func:`extract_answer`)
    1. Reasoning is not an answer. If the completion has ``</think>``, only the text after the
       last ``</think>`` is read; if no answer is found there, there is no credit (we never fall
       back into the reasoning). A ``<think>`` that is never closed gives no answer.
    2. In that text, the first rule that finds something wins: the last ``<answer>...</answer>``
       (a ``\\boxed{}`` inside it is preferred to the whole tag; an unclosed tag runs to the
       end), the last ``\\boxed{...}`` / ``\\boxed x`` / ``\\fbox{...}`` (nested braces), the
       last GSM8K ``#### N``, the last "final answer: X" / "the answer is X".
    3. ``fallback="last_number"`` then takes the last number in the text (off by default).

Equivalence policy (:func:`is_equivalent`)
    - Numbers compare exactly as fractions: ``0.5 == 1/2 == \\frac12 == \\dfrac{1}{2}``, but
      ``0.333 != 1/3``. A decimal equals an irrational value (``\\sqrt2``, ``\\pi``) only to a
      relative 1e-8: rounded approximations (``1.414``, ``3.14``) earn no credit.
    - Thousands separators ``1,000``, ``1{,}000``, ``1\\,000`` are read as one number when the
      whole answer is that number; inside brackets a comma separates items (``(1,000)`` is a pair).
    - Percent: ``50\\%`` equals both ``50`` and ``0.5``. Units and ``\\text{}`` after a value are
      dropped (``5 \\text{ cm} == 5 dollars == 5``; units are not checked); ``\\$`` and degrees
      (``30^\\circ == 30°== 30``, not ``\\pi/6``) are dropped.
    - Scientific notation ``1.2\\times10^{3} == 1.2e3 == 1200``. Radicals, ``\\pi``, ``e``, logs
      (``\\log`` and ``\\ln`` are natural, ``\\log_b`` base b, ``lg`` base 10), trig, ``|x|``,
      ``n!``, ``\\binom`` are evaluated. ``i`` is always the imaginary unit, ``e`` always Euler's
      number. ``2\\frac{1}{2}`` (an integer then a numeric fraction) is the mixed number 5/2.
    - Expressions are equal when they agree at 4 pseudo-random real points (complex arithmetic):
      ``x^2+2x+1 == (x+1)^2``; variable names matter (``x+1 != y+1``).
    - ``x = 3`` equals ``3`` (an ``=`` whose left side is one variable is an assignment); two
      equations are equal when ``lhs - rhs`` agree up to a nonzero factor
      (``y = 2x+1 == 2x+1 = y == 2y = 4x+2``); inequalities up to a positive factor, with
      ``>`` flipped to ``<``. An inequality never equals an interval.
    - ``\\{1,2\\} == \\{2,1\\} == 1, 2`` (sets and bare lists are unordered; a one-element set
      equals its element); ``(1,2) != (2,1)`` and a tuple never equals a set or a bare list.
      ``a \\pm b`` is the list ``a+b, a-b``.
    - Intervals keep their brackets: ``[1,2) != [1,2]``; ``(1,2)`` is both the open interval
      and the pair. Unions compare unordered; ``\\infty`` only equals ``\\infty`` (same sign).
    - Matrices (``pmatrix``, ``bmatrix``, ``matrix``) compare cell by cell, same shape; a
      column vector does not equal a tuple.
    - Multiple choice: a gold that is one capital letter A-E (``B``, ``(B)``, ``\\text{B}``)
      needs a prediction that starts with the same capital letter (``(B) 42`` earns credit).
    - Anything else (text such as ``Monday``, or an answer the parser cannot read) compares as
      text, ignoring case, spaces and braces. A gold that cannot be parsed still compares as text;
      an empty gold makes the reward ``None`` (does not apply).

>>> math_accuracy(["<think>maybe 3</think><answer>\\\\frac{1}{2}</answer>", "\\\\boxed{0.5}", "2"],
...               answer=["1/2", "1/2", "1/2"])
[1.0, 1.0, 0.0]
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple

from grpo_kit.registry import completion_text, reward
from rewards._matheval import values_equal
from rewards._mathparse import ParseError, looks_like_text, normalize, parse, tokenize

MAX_ANSWER_CHARS = 1000
FALLBACKS = ("none", "last_number")
_BOXED_TRIES = 5  # boxed candidates tried from the end (each scan is bounded)
_SCAN_LIMIT = 20_000

__all__ = ["extract_answer", "is_equivalent", "math_accuracy", "MAX_ANSWER_CHARS", "FALLBACKS"]


# ----------------------------------------------------------------------------- extraction


def extract_answer(text: str, *, fallback: str = "none") -> str | None:
    """The final answer of a completion, or ``None`` (policy in the module docstring).

    >>> extract_answer(r"so \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> extract_answer("<think>it is 7</think><answer>x = 3</answer>")
    'x = 3'
    >>> extract_answer(r"<think>\\boxed{7}</think>I am not sure.") is None
    True
    >>> extract_answer("She pays 10 + 8 = 18 dollars.\\n#### 18")
    '18'
    >>> extract_answer("So we get 42 apples.", fallback="last_number")
    '42'
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    region = _final_region(text)
    if not region:
        return None
    for rule in (_answer_tag, _last_boxed, _gsm8k, _phrase):
        found = rule(region)
        if found:
            return found
    if fallback == "last_number":
        return _last_number(region)
    return None


def _final_region(text: str) -> str:
    """The text after the last ``</think>``; empty for unterminated reasoning."""
    end = text.rfind("</think>")
    if end >= 0:
        return text[end + len("</think>") :]
    return "" if "<think>" in text else text


def _answer_tag(region: str) -> str | None:
    start = region.rfind("<answer>")
    if start < 0:
        return None
    close = region.find("</answer>", start)
    inner = region[start + len("<answer>") : close if close >= 0 else len(region)]
    return _last_boxed(inner) or _phrase(inner) or inner.strip() or None


_BRACES = re.compile(r"\\[{}]|[{}]")
_BARE_BOXED = re.compile(r"[ \t]+([^\s$]{1,200})")


def _last_boxed(region: str) -> str | None:
    idx = max(region.rfind("\\boxed"), region.rfind("\\fbox"))
    for _ in range(_BOXED_TRIES):
        if idx < 0:
            return None
        found = _boxed_content(region, idx)
        if found is not None:
            return found
        idx = max(region.rfind("\\boxed", 0, idx), region.rfind("\\fbox", 0, idx))
    return None


def _boxed_content(region: str, idx: int) -> str | None:
    pos = idx + (len("\\boxed") if region.startswith("\\boxed", idx) else len("\\fbox"))
    m = _BARE_BOXED.match(region, pos)
    if m and not m.group(1).startswith("{"):
        return m.group(1)
    while pos < len(region) and region[pos] in " \t":
        pos += 1
    if pos >= len(region) or region[pos] != "{":
        return None
    depth = 0
    for b in _BRACES.finditer(region, pos, min(len(region), pos + _SCAN_LIMIT)):
        tok = b.group(0)
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return region[pos + 1 : b.start()].strip() or None
    return None


def _gsm8k(region: str) -> str | None:
    idx = region.rfind("####")
    if idx < 0:
        return None
    line = region[idx + 4 : idx + 4 + _SCAN_LIMIT].split("\n", 1)[0]
    return line.strip() or None


_PHRASE = re.compile(r"(?i)(?:final answer|the answer)[ \t]*(?:is[ \t]*)?:?")
_DOLLARS = re.compile(r"\$([^$]{1,1000})\$")


def _phrase(region: str) -> str | None:
    last = None
    for last in _PHRASE.finditer(region):
        pass
    if last is None:
        return None
    rest = region[last.end() : last.end() + 2000].split("\n", 1)[0].replace("**", "").strip()
    boxed = _last_boxed(rest)
    if boxed:
        return boxed
    m = _DOLLARS.search(rest)
    if m:
        return m.group(1).strip() or None
    cut = rest.find(". ")
    rest = (rest if cut < 0 else rest[:cut]).strip().rstrip(".").strip()
    return rest or None


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def _last_number(region: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(region):
        pass
    return None if last is None else last.group(0)


# ----------------------------------------------------------------------------- equivalence


class _Answer(NamedTuple):
    text: str  # normalised
    folded: str  # for text comparison
    percent: bool
    tree: Any  # parsed tree, or None (text / unparseable / too long)
    choice: str | None  # multiple-choice letter


_FOLD = re.compile(r"[\s{}\\]|\.$")
_GOLD_CHOICE = re.compile(r"\(?([A-E])\)?")
_PRED_CHOICE = re.compile(r"\(?([A-E])(?:\)|[.:](?!\d)|\s|$)")


def _prepare(raw: str) -> _Answer:
    if len(raw) > MAX_ANSWER_CHARS:  # text only, and not cached
        return _Answer(raw.strip(), _FOLD.sub("", raw.lower()), False, None, None)
    return _prepare_short(raw)


@lru_cache(maxsize=8192)
def _prepare_short(raw: str) -> _Answer:
    text, percent = normalize(raw)
    folded = _FOLD.sub("", text.lower())
    choice = m.group(1) if (m := _PRED_CHOICE.match(text)) else None
    tree = None
    if text and not looks_like_text(text):
        try:
            tree = parse(tokenize(text))
        except (ParseError, ValueError, ArithmeticError):  # unreadable maths compares as text
            tree = None
    return _Answer(text, folded, percent, tree, choice)


def is_equivalent(pred: str, gold: str) -> bool:
    """Whether ``pred`` is the same answer as ``gold`` (policy in the module docstring).

    >>> is_equivalent("0.5", r"\\frac{1}{2}"), is_equivalent(r"\\{2,1\\}", r"\\{1,2\\}")
    (True, True)
    >>> is_equivalent("(1,2)", r"\\{2,1\\}"), is_equivalent("[1,2)", "[1,2]")
    (False, False)
    >>> is_equivalent("x = 3", "3"), is_equivalent(r"50\\%", "0.5"), is_equivalent("(B)", "B")
    (True, True, True)
    """
    if pred is None or gold is None:
        return False
    p, g = _prepare(pred.strip()), _prepare(gold.strip())
    if not g.text or not p.text:
        return False
    if _GOLD_CHOICE.fullmatch(g.text):
        return p.choice == g.choice
    if p.text == g.text and p.percent == g.percent:
        return True
    if p.tree is None or g.tree is None:
        return p.folded == g.folded and p.percent == g.percent
    if p.percent != g.percent and p.tree[0] not in _STRUCTS and g.tree[0] not in _STRUCTS:
        pct = p.tree if p.percent else g.tree
        other = g.tree if p.percent else p.tree
        return values_equal(pct, other) or values_equal(_percent_of(pct), other)
    return values_equal(p.tree, g.tree)


_STRUCTS = ("list", "set", "tuple", "union", "matrix", "rel")


def _percent_of(tree):
    from fractions import Fraction

    return ("mul", [tree, ("inv", ("num", Fraction(100), "int"))])


def _gold_answer(gold: Any) -> str:
    """The gold answer as text; a full solution (``\\boxed{}`` or ``#### N``) gives its answer."""
    text = str(gold).strip()
    if "\\boxed" in text or "\\fbox" in text:
        return _last_boxed(text) or text
    if "####" in text:
        return _gsm8k(text) or text
    return text


# ----------------------------------------------------------------------------- reward


@reward("math_accuracy")
def math_accuracy(
    completions: list[Any], answer: list[Any], *, fallback: str = "none", **columns: Any
) -> list[float | None]:
    """1.0 if the completion's final answer equals ``answer`` (the gold column), else 0.0;
    ``None`` where the gold answer is empty. ``fallback="last_number"`` also reads the last
    number of a completion with no marked answer.

    >>> math_accuracy(["The answer is $x=3$.", r"\\boxed{4}"], answer=["3", "3"])
    [1.0, 0.0]
    >>> math_accuracy([[{"role": "assistant", "content": r"\\boxed{\\{1,2\\}}"}]], answer=[r"\\{2,1\\}"])
    [1.0]
    >>> math_accuracy(["I got 12."], answer=[""])
    [None]
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    if len(completions) != len(answer):
        raise ValueError(f"{len(completions)} completions but {len(answer)} answers")
    scores: list[float | None] = []
    for completion, gold in zip(completions, answer):
        gold_text = "" if gold is None else _gold_answer(gold)
        if not gold_text:
            scores.append(None)
            continue
        pred = extract_answer(completion_text(completion), fallback=fallback)
        scores.append(1.0 if pred is not None and is_equivalent(pred, gold_text) else 0.0)
    return scores
