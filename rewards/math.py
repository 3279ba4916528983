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
    2. In that text: the last ``<answer>...</answer>`` (an unclosed tag runs to the end) is the
       region read, if there is one. Then the first rule that finds something wins: a "final
       answer: X" / "the answer is X" written after the last box; the last ``\\boxed{...}`` /
       ``\\boxed x`` / ``\\fbox{...}`` (nested braces); the last GSM8K ``#### N``; inside answer
       tags, the span itself.
    3. Several boxes joined only by "and"/"or" or by no words at all (``\\boxed{1} and \\boxed{2}``)
       are read as a list when the gold has several items (a list, a set, several boxes), and as a
       tuple when the gold is one; with a one-item gold, or words between them (``\\boxed{3}, no:
       \\boxed{5}``), the last box is the answer.
    4. A phrase or an answer span that is prose is read by :func:`read_span`: its maths when it is
       maths; else the maths after its last "is" (``The largest $n$ is 34`` -> ``34``); else a
       number after its last ``$``, or its last ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` that
       parses (all of them when only "and"/commas join them); else, with no maths delimiters, its
       last number. Inline ``$...$`` never spans lines. Unreadable maths (``11 6/6``) is not prose
       and gets no "last number".
    5. ``fallback="last_number"`` then takes the last number in the text (off by default; the
       ``gsm8k`` task turns it on).

Equivalence policy (:func:`is_equivalent`)
    - Numbers compare exactly as fractions: ``0.5 == 1/2 == \\frac12 == \\dfrac{1}{2}``, but
      ``0.333 != 1/3``. A decimal equals an irrational value (``\\sqrt2``, ``\\pi``) only to a
      relative 1e-8: rounded approximations (``1.414``, ``3.14``) earn no credit. Setting
      ``numeric_precision`` (a relative tolerance) makes numbers equal within it.
    - Space-separated digits are never a product: ``a b/c`` with ``0 <= b < c`` is a mixed number
      (``4 4/9 == 40/9``, ``2\\frac{1}{2} == 5/2``), groups of three digits are one number
      (``1 000 == 1000``), and anything else (``2 3``, ``11 6/6``) is unreadable.
    - Thousands separators ``1,000``, ``1{,}000``, ``1\\,000``, ``11,\\!111`` are read as one number
      when the whole answer is that number; inside brackets a comma separates items (``(1,000)``
      is a pair). ``decimal_comma=True`` reads a whole answer ``1,22`` as 1.22 (default: a list).
    - Percent (``%``, ``percent``, ``pct``): ``50\\%`` equals both ``50`` and ``0.5``
      (``percent="scaled"``: a percent prediction is only its value / 100; a percent gold still
      accepts both). Units and ``\\text{}`` after a value are dropped (``5 \\text{ cm} == 5 dollars
      == 5``; units are not checked); ``\\$`` and degrees (``30^\\circ == 30°== 30``, not
      ``\\pi/6``) are dropped. Trailing ``.``, ``,``, ``;`` are dropped, an ellipsis is not.
    - Scientific notation ``1.2\\times10^{3} == 1.2e3 == 1200``. Radicals (``\\sqrt[3]{x}``, real
      odd roots of negative numbers, also as ``x^{2/3}``), ``\\pi``, ``e``, logs (``\\log`` and
      ``\\ln`` are natural, ``\\log_b`` base b, ``lg`` base 10), trig, ``|x|``, ``n!``, ``\\binom``
      are evaluated; ``\\cfrac`` is ``\\frac``. ``i`` is always the imaginary unit, ``e`` Euler's.
    - Expressions are equal when they agree at 4 pseudo-random real points (complex arithmetic):
      ``x^2+2x+1 == (x+1)^2``; variable names matter (``x+1 != y+1``).
    - A name on the left of ``=`` is dropped against an answer without one: ``x = 3 == 3``,
      ``(p,q)=(3,2) == (3,2)``, ``AB=4, CD=5 == 4, 5``, ``\\frac{NO}{BO}=2 == 2``, ``|AB|=1 == 1``
      (a name: letters joined by products, quotients, ``|.|``, ``:`` or a tuple). An ``=`` chain
      is its last member (``x = 2+3 = 5 == 5``, ``1/2 = 10/9 == 10/9``) when the others are names
      or constants; ``\\approx`` and what follows are dropped (``x = 1/3 \\approx 0.33 == 1/3``;
      ``x \\approx 11 == 11``). Two equations are equal when ``lhs - rhs`` agree up to a nonzero
      factor (``y = 2x+1 == 2x+1 = y == 2y = 4x+2``); inequalities up to a positive factor.
    - Inequalities in one variable and intervals compare as sets of reals: ``-2 \\le x \\le 7 ==
      x \\in [-2,7]``, ``x > 2 == (2,\\infty)``, ``1 \\le |z| \\le 2 == [-2,-1] \\cup [1,2]``.
    - ``\\{1,2\\} == \\{2,1\\} == 1, 2 == 1 and 2 == 1; 2`` (sets and bare lists are unordered;
      ``,``, ``;``, ``and``, ``or`` join items; a one-element set equals its element);
      ``(1,2) != (2,1)`` and a tuple never equals a set or a bare list. ``p=5, q=2; p=7, q=2`` is
      ``(5,2), (7,2)``. ``a \\pm b`` is the list ``a+b, a-b``. ``a:b`` is a ratio (``12:00 != 1:00``).
    - Intervals keep their brackets: ``[1,2) != [1,2]``; ``(1,2)`` is both the open interval
      and the pair. Unions compare unordered; ``\\infty`` only equals ``\\infty`` (same sign).
    - Matrices (``pmatrix``, ``bmatrix``, ``matrix``, ``array``) compare cell by cell, same
      shape; a column vector does not equal a tuple.
    - Multiple choice: a gold that is one capital letter A-E (``B``, ``(B)``, ``\\text{B}``)
      needs a prediction that starts with the same capital letter (``(B) 42`` earns credit).
    - Anything else (text such as ``Monday``, or an answer the parser cannot read) compares as
      text, ignoring case, spaces (not between digits) and braces.

Gold answers
    A gold that is a solution gives its boxed answer (several different boxes: their list), its
    ``#### N`` or its "final answer" phrase; it is never reduced to "its last number". The reward
    is ``None`` ("does not apply") for an empty gold and for a gold that is not a checkable answer:
    a bare phrase of two or more words with no digit and no maths (``Answer is forty two.``,
    ``forty two``). A one-word gold (``Monday``) or text written as ``\\text{...}`` / inside
    ``$...$`` is a text answer and is scored.

sympy is not used: no case of the Math-Verify suite needs a symbolic check that the bounded
evaluation at random points (with exact rationals for constants) does not already give.

>>> math_accuracy(["<think>maybe 3</think><answer>\\\\frac{1}{2}</answer>", "\\\\boxed{0.5}", "2"],
...               answer=["1/2", "1/2", "1/2"])
[1.0, 1.0, 0.0]
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from typing import Any, NamedTuple

from grpo_kit.contract import completion_text, reward
from rewards._matheval import values_equal
from rewards._mathparse import MATH_WORDS, ParseError, looks_like_text, normalize, parse, tokenize

MAX_ANSWER_CHARS = 1000
FALLBACKS = ("none", "last_number")
PERCENTS = ("either", "scaled")
_MAX_BOXES = 16  # boxed answers read from the end of the text (each scan is bounded)
_SPAN_LIMIT = 4000  # an answer span longer than this is read from its last 4,000 characters
_SCAN_LIMIT = 20_000

__all__ = ["extract_answer", "is_equivalent", "math_accuracy", "MAX_ANSWER_CHARS", "FALLBACKS", "PERCENTS"]


# ----------------------------------------------------------------------------- extraction


class _Found(NamedTuple):
    answer: str
    boxes: tuple[str, ...]  # every boxed answer of the region (read as a list for a list gold)


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
    >>> extract_answer("Final Answer: The largest $n$ is 34.")
    '34'
    """
    found = _extract(text, fallback)
    return None if found is None else found.answer


def _extract(text: str, fallback: str = "none") -> _Found | None:
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    region = _final_region(text)
    if not region:
        return None
    start = region.rfind("<answer>")
    if start >= 0:
        close = region.find("</answer>", start)
        region = region[start + len("<answer>") : close if close >= 0 else len(region)]
        return _marked(region, tag=True)
    found = _marked(region, tag=False)
    if found is None and fallback == "last_number":
        number = _last_number(region)
        return None if number is None else _Found(number, ())
    return found


def _final_region(text: str) -> str:
    """The text after the last ``</think>``; empty for unterminated reasoning."""
    end = text.rfind("</think>")
    if end >= 0:
        return text[end + len("</think>") :]
    return "" if "<think>" in text else text


def _marked(region: str, tag: bool) -> _Found | None:
    """The boxed answers, or a "final answer" phrase written after the last box, or ``#### N``;
    inside ``<answer>`` tags, the span itself."""
    boxes, box_at = _all_boxed(region)
    phrase = _phrase(region, after=box_at)
    if phrase is not None:
        return _Found(phrase, ())
    if boxes:
        return _Found(boxes[-1], tuple(boxes))
    found = _gsm8k(region) or (read_span(region) if tag else None)
    return _Found(found, ()) if found else None


_BRACES = re.compile(r"\\[{}]|[{}]")
_BARE_BOXED = re.compile(r"[ \t]+([^\s$]{1,200})")
_BOX = re.compile(r"\\(?:boxed|fbox)")


def _all_boxed(region: str) -> tuple[list[str], int]:
    """The boxed answers that end the text, in order, and where the last one starts: the last box,
    with the boxes before it when only "and"/"or" or no words at all stand between them
    (``\\boxed{1} and \\boxed{2}``, ``\\boxed{1},\\boxed{2}``; not ``\\boxed{3} no, \\boxed{5}``)."""
    found, tries, after = [], 0, None
    idx = max(region.rfind("\\boxed"), region.rfind("\\fbox"))
    while idx >= 0 and len(found) < _MAX_BOXES and tries < 2 * _MAX_BOXES:
        tries += 1
        box = _boxed_content(region, idx)
        if box is not None:
            content, end = box
            if after is not None and not _joins(region[end:after]):
                break
            found.append((idx, content))
            after = idx
        idx = max(region.rfind("\\boxed", 0, idx), region.rfind("\\fbox", 0, idx))
    return [c for _, c in found[::-1]], (found[0][0] if found else -1)


_COMMAND = re.compile(r"\\[a-zA-Z]+")
_ALPHA = re.compile(r"[A-Za-z]+")


def _joins(between: str) -> bool:
    words = _ALPHA.findall(_COMMAND.sub(" ", between[:500])) if len(between) <= 500 else ["..."]
    return not words or any(w.lower() in ("and", "or") for w in words)


def _boxed_content(region: str, idx: int) -> tuple[str, int] | None:
    """The content of the box at ``idx`` and where it ends, or ``None`` (unclosed, empty)."""
    pos = idx + (len("\\boxed") if region.startswith("\\boxed", idx) else len("\\fbox"))
    m = _BARE_BOXED.match(region, pos)
    if m and not m.group(1).startswith("{"):
        return m.group(1), m.end()
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
                content = region[pos + 1 : b.start()].strip()
                return (content, b.end()) if content else None
    return None


def _gsm8k(region: str) -> str | None:
    idx = region.rfind("####")
    if idx < 0:
        return None
    line = region[idx + 4 : idx + 4 + _SCAN_LIMIT].split("\n", 1)[0]
    return line.strip() or None


_PHRASE = re.compile(r"(?i)(?:final answer|the answer)[ \t]*(?:is[ \t]*)?:?")
_SENTENCE_END = re.compile(r"(?<!\\)\$|\.(?:\s|$)")


def _phrase(region: str, after: int = -1) -> str | None:
    """The math after the last "final answer" / "the answer is" (that starts after ``after``)."""
    last = None
    for last in _PHRASE.finditer(region, max(after, 0)):
        pass
    if last is None:
        return None
    rest = region[last.end() : last.end() + 2000].split("\n", 1)[0].replace("**", "").strip()
    return read_span(_first_sentence(rest))


def _first_sentence(s: str) -> str:
    """Up to the first ``. `` outside ``$...$``."""
    inside = False
    for m in _SENTENCE_END.finditer(s):
        if m.group(0) == "$":
            inside = not inside
        elif not inside:
            return s[: m.start()]
    return s


# An answer span that is prose: its $...$ math, the math after "is", or its last number
_SPAN = re.compile(r"\$\$(.+?)\$\$|(?<!\\)\$((?:\\\$|[^$\n])+?)\$|\\\(([^\n]+?)\\\)|\\\[(.+?)\\\]", re.S)
_DELIMS = re.compile(r"(?<!\\)\$|\\[()\[\]]")
_JOINERS = re.compile(r"(?i)[\s,;.\"\\]*(?:(?:and|or)[\s,;.\"\\]*)?")
_COPULA = re.compile(r"(?i)\b(?:is|are|was|equals)\b")
_NUMBER_EXPR = re.compile(r"(?<![A-Za-z\d.])[-+]?\$?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?(?:\s*%)?")


def read_span(s: str, depth: int = 0) -> str | None:
    """The answer in a marked span: the span when it is maths; else the math after its last "is";
    else the number after its last math delimiter, or its last parseable ``$...$`` (all of them
    when only "and"/"or"/commas join them); else, with no math delimiters, its last number.

    >>> read_span("Therefore $x \\\\geq 5$ is the solution."), read_span(r"\\(12\\) and \\(13\\).")
    ('x \\\\geq 5', '12, 13')
    >>> read_span("the number is not 10 which is 1,000.99€")
    '1,000.99'
    """
    s = s.strip()[-_SPAN_LIMIT:]
    whole = _SPAN.fullmatch(s) if len(s) <= MAX_ANSWER_CHARS else None
    if whole is not None:
        s = next(g for g in whole.groups() if g is not None).strip()
    if not s or _is_math(s):
        return s or None
    if depth == 0:
        copula = None
        for copula in _COPULA.finditer(s):
            pass
        if copula is not None:
            found = read_span(s[copula.end() :], 1)
            if found and _is_math(found):
                return found
    delims = list(_DELIMS.finditer(s))
    if not delims:  # prose without math delimiters: its last number (after "is": in its first sentence)
        prose = depth > 0 or _is_prose_text(s)
        number = _last_match(_NUMBER_EXPR, _first_sentence(s) if depth else s) if prose else None
        return number.group(0) if number else (s if depth == 0 else None)
    tail = _last_match(_NUMBER_EXPR, s[delims[-1].end() :])
    if tail is not None:
        return tail.group(0)
    spans = [m for m in _SPAN.finditer(s)]
    if not spans:
        return s if depth == 0 else None
    texts = [next(g for g in m.groups() if g is not None).strip() for m in spans]
    outside = _SPAN.sub(" , ", s)
    if len(texts) > 1 and _JOINERS.fullmatch(outside) and all(_is_math(t) for t in texts):
        return ", ".join(texts)
    for text in reversed(texts):
        if _is_math(text):
            return text
    return texts[-1] if depth == 0 else None


_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


def _is_prose_text(s: str) -> bool:
    """Two or more English words (not LaTeX command names, not maths names)."""
    words = [w for w in _PROSE_WORD.findall(s[:MAX_ANSWER_CHARS]) if w.lower() not in MATH_WORDS]
    return len(words) >= 2


def _last_match(pattern: re.Pattern, s: str):
    last = None
    for last in pattern.finditer(s):
        pass
    return last


def _is_math(s: str) -> bool:
    return len(s) <= MAX_ANSWER_CHARS and _prepare_short(s, False).tree is not None


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def _last_number(region: str) -> str | None:
    last = _last_match(_NUMBER, region)
    return None if last is None else last.group(0)


# ----------------------------------------------------------------------------- equivalence


class _Answer(NamedTuple):
    text: str  # normalised
    folded: str  # for text comparison
    percent: bool
    tree: Any  # parsed tree, or None (text / unparseable / too long)
    choice: str | None  # multiple-choice letter


_FOLD = re.compile(r"[\s{}\\]|\.$")
_DIGIT_GAP = re.compile(r"(?<=\d)\s+(?=\d)")  # "2 3" is not "23", even as text
_GOLD_CHOICE = re.compile(r"\(?([A-E])\)?")
_PRED_CHOICE = re.compile(r"\(?([A-E])(?:\)|[.:](?!\d)|\s|$)")


def _prepare(raw: str, decimal_comma: bool = False) -> _Answer:
    if len(raw) > MAX_ANSWER_CHARS:  # text only, and not cached
        return _Answer(raw.strip(), _FOLD.sub("", raw.lower()), False, None, None)
    return _prepare_short(raw, decimal_comma)


@lru_cache(maxsize=8192)
def _prepare_short(raw: str, decimal_comma: bool) -> _Answer:
    text, percent = normalize(raw, decimal_comma)
    folded = _FOLD.sub("", _DIGIT_GAP.sub("_", text.lower()))
    choice = m.group(1) if (m := _PRED_CHOICE.match(text)) else None
    tree = None
    if text and not looks_like_text(text):
        try:
            tree = parse(tokenize(text))
        except (ParseError, ValueError, ArithmeticError):  # unreadable maths compares as text
            tree = None
    return _Answer(text, folded, percent, tree, choice)


def is_equivalent(
    pred: str,
    gold: str,
    *,
    numeric_precision: float | None = None,
    decimal_comma: bool = False,
    percent: str = "either",
) -> bool:
    """Whether ``pred`` is the same answer as ``gold`` (policy in the module docstring).

    >>> is_equivalent("0.5", r"\\frac{1}{2}"), is_equivalent(r"\\{2,1\\}", r"\\{1,2\\}")
    (True, True)
    >>> is_equivalent("(1,2)", r"\\{2,1\\}"), is_equivalent("[1,2)", "[1,2]")
    (False, False)
    >>> is_equivalent("x = 3", "3"), is_equivalent(r"50\\%", "0.5"), is_equivalent("(B)", "B")
    (True, True, True)
    >>> is_equivalent("0.3333", "1/3"), is_equivalent("0.3333", "1/3", numeric_precision=1e-3)
    (False, True)
    >>> is_equivalent("1,5", "1.5"), is_equivalent("1,5", "1.5", decimal_comma=True)
    (False, True)
    >>> is_equivalent(r"50\\%", "50"), is_equivalent(r"50\\%", "50", percent="scaled")
    (True, False)
    """
    if pred is None or gold is None:
        return False
    p, g = _prepare(pred.strip(), decimal_comma), _prepare(gold.strip(), decimal_comma)
    if not g.text or not p.text:
        return False
    if _GOLD_CHOICE.fullmatch(g.text):
        return p.choice == g.choice
    if p.text == g.text and p.percent == g.percent:
        return True
    if p.tree is None or g.tree is None:
        return p.folded == g.folded and p.percent == g.percent
    tol = numeric_precision
    if p.percent != g.percent and p.tree[0] not in _STRUCTS and g.tree[0] not in _STRUCTS:
        pct = p.tree if p.percent else g.tree
        other = g.tree if p.percent else p.tree
        if values_equal(_percent_of(pct), other, tol):
            return True
        return (percent == "either" or g.percent) and values_equal(pct, other, tol)
    return values_equal(p.tree, g.tree, tol)


_STRUCTS = ("list", "set", "tuple", "union", "matrix", "rel", "ratio")


def _percent_of(tree):
    return ("mul", [tree, ("inv", ("num", Fraction(100), "int"))])


# ----------------------------------------------------------------------------- gold answers


def _gold_answer(gold: Any) -> str:
    """The gold answer as text: a full solution gives its boxed answer (several different boxes
    give the list of them), its ``#### N``, or its "final answer" phrase."""
    text = str(gold).strip()
    boxes, _ = _all_boxed(text) if "\\boxed" in text or "\\fbox" in text else ([], -1)
    distinct = list(dict.fromkeys(boxes))
    if distinct:
        return ", ".join(distinct) if len(distinct) > 1 else distinct[0]
    if "####" in text:
        return _gsm8k(text) or text
    if len(text) <= MAX_ANSWER_CHARS and _is_math(text):
        return text
    return _phrase(text) or text  # a gold is never reduced to "its last number"


_WRAPPED = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{|\$|\\[(\[]|\\boxed")
_DIGIT = re.compile(r"\d")


def _is_prose(raw: str, gold_text: str) -> bool:
    """A gold that is not a checkable answer: a bare phrase of two or more words with no digit and
    no maths (``Answer is forty two.``, ``forty two``). One word (``Monday``, ``B``) and any text
    written as ``\\text{...}`` or inside ``$...$`` is a text answer."""
    if _WRAPPED.search(raw) or _DIGIT.search(gold_text) or len(gold_text.split()) < 2:
        return False
    return _prepare(gold_text).tree is None


def _as_gold_kind(boxes: tuple[str, ...], gold: _Answer) -> str | None:
    """Several boxed answers as one answer when the gold has several items: the list of the
    distinct boxes, in parentheses when the gold is a tuple; ``None`` for a one-item gold."""
    distinct = list(dict.fromkeys(boxes))
    tree = gold.tree
    if tree is not None and tree[0] == "rel" and tree[1] == ["="]:
        tree = tree[2][-1]
    if len(distinct) < 2 or tree is None:
        return None
    if tree[0] == "tuple" and tree[1:3] == ("(", ")") and len(tree[3]) == len(distinct):
        return "(" + ", ".join(distinct) + ")"
    if tree[0] in ("list", "set") and len(tree[1]) > 1:
        return ", ".join(distinct)
    return None


# ----------------------------------------------------------------------------- reward


@reward("math_accuracy")
def math_accuracy(
    completions: list[Any],
    answer: list[Any],
    *,
    fallback: str = "none",
    numeric_precision: float | None = None,
    decimal_comma: bool = False,
    percent: str = "either",
    **columns: Any,
) -> list[float | None]:
    """1.0 if the completion's final answer equals ``answer`` (the gold column), else 0.0;
    ``None`` ("does not apply") where the gold is empty or prose that is not a checkable answer.

    ``fallback="last_number"`` also reads the last number of a completion with no marked answer;
    ``numeric_precision`` (a relative tolerance, e.g. ``1e-6``) lets numbers differ by that much
    (default: exact rationals); ``decimal_comma=True`` reads ``1,22`` as 1.22 (default: a list);
    ``percent="scaled"`` reads a percent prediction only as its value / 100 (default ``"either"``:
    ``50\\%`` equals both 50 and 0.5; a percent gold accepts both in either mode).

    >>> math_accuracy(["The answer is $x=3$.", r"\\boxed{4}"], answer=["3", "3"])
    [1.0, 0.0]
    >>> math_accuracy([[{"role": "assistant", "content": r"\\boxed{\\{1,2\\}}"}]], answer=[r"\\{2,1\\}"])
    [1.0]
    >>> math_accuracy(["I got 12.", r"\\boxed{1} and \\boxed{2}"], answer=["", "1, 2"])
    [None, 1.0]
    >>> math_accuracy([r"\\boxed{42}"], answer=["Answer is forty two."])
    [None]
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    if percent not in PERCENTS:
        raise ValueError(f"percent must be one of {', '.join(PERCENTS)}, got {percent!r}")
    if numeric_precision is not None and not 0 <= numeric_precision < 1:
        raise ValueError(f"numeric_precision is a relative tolerance in [0, 1), got {numeric_precision!r}")
    if len(completions) != len(answer):
        raise ValueError(f"{len(completions)} completions but {len(answer)} answers")
    scores: list[float | None] = []
    for completion, gold in zip(completions, answer):
        gold_text = "" if gold is None else _gold_answer(gold)
        if not gold_text or _is_prose(str(gold), gold_text):
            scores.append(None)
            continue
        found = _extract(completion_text(completion), fallback)
        pred = None if found is None else found.answer
        if found is not None and len(found.boxes) > 1:
            pred = _as_gold_kind(found.boxes, _prepare(gold_text, decimal_comma)) or pred
        ok = pred is not None and is_equivalent(
            pred, gold_text, numeric_precision=numeric_precision, decimal_comma=decimal_comma, percent=percent
        )
        scores.append(1.0 if ok else 0.0)
    return scores
