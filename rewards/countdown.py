"""The Countdown reward (TinyZero): make ``target`` from ``nums`` with + - * / and parentheses.

The equation is read from the last ``<answer>...</answer>`` of the text after the last ``</think>``
(or of the whole completion when there is no ``</think>``). It is evaluated by a small
recursive-descent parser to an exact :class:`fractions.Fraction`; nothing is ever passed to
``eval``. The parser is bounded: at most :data:`MAX_EQUATION_CHARS` characters and
:data:`MAX_DEPTH` nested parentheses, so hostile text costs linear time and never recurses deeply.
"""

from __future__ import annotations

import operator
import re
from fractions import Fraction

from grpo_kit.contract import completion_text, reward

MAX_EQUATION_CHARS = 1_000
"""Longer answers are not parsed (a 6-number equation needs well under 100 characters)."""
MAX_DEPTH = 64
"""Deeper parenthesis nesting is rejected before Python's recursion limit is anywhere near."""


class _Invalid(Exception):
    """The equation is not one our grammar accepts."""


def _tokenize(s: str) -> list[str]:
    tokens, i, n = [], 0, len(s)
    while i < n:
        ch = s[i]
        if ch.isspace():
            i += 1
        elif "0" <= ch <= "9":
            j = i
            while j < n and "0" <= s[j] <= "9":
                j += 1
            tokens.append(s[i:j])
            i = j
        elif ch in "+-*/()":
            tokens.append(ch)
            i += 1
        else:
            raise _Invalid(f"unexpected character {ch!r}")
    return tokens


class _Parser:
    """expr := term (('+' | '-') term)* ; term := unary (('*' | '/') unary)* ;
    unary := '-'* primary ; primary := INT | '(' expr ')'"""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.depth = tokens, 0, 0
        self.literals: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise _Invalid("unexpected end of equation")
        self.pos += 1
        return tok

    def parse(self) -> Fraction:
        value = self.expr()
        if self.peek() is not None:
            raise _Invalid(f"unexpected {self.peek()!r}")
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            if self.take() == "*":
                value = value * self.unary()
            else:
                divisor = self.unary()
                if divisor == 0:
                    raise _Invalid("division by zero")
                value = value / divisor
        return value

    def unary(self) -> Fraction:
        negate = False
        while self.peek() == "-":  # a loop, not recursion: "- - - 5" costs no stack
            self.take()
            negate = not negate
        value = self.primary()
        return -value if negate else value

    def primary(self) -> Fraction:
        tok = self.take()
        if tok.isdigit():
            self.literals.append(int(tok))
            return Fraction(int(tok))
        if tok != "(":
            raise _Invalid(f"unexpected {tok!r}")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Invalid("parentheses nested too deeply")
        value = self.expr()
        if self.take() != ")":
            raise _Invalid("missing ')'")
        self.depth -= 1
        return value


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """The exact value of an arithmetic expression and the integer literals it uses, in order.

    Raises ``ValueError`` for anything outside the grammar (other characters, decimals, unbalanced
    or too deeply nested parentheses, division by zero, over :data:`MAX_EQUATION_CHARS` characters).

    >>> evaluate("(100 - 4) / (3 - -1)")
    (Fraction(24, 1), [100, 4, 3, 1])
    >>> evaluate("1 / 0")
    Traceback (most recent call last):
    ...
    ValueError: division by zero
    """
    if len(expression) > MAX_EQUATION_CHARS:
        raise ValueError(f"equation longer than {MAX_EQUATION_CHARS} characters")
    try:
        parser = _Parser(_tokenize(expression))
        return parser.parse(), parser.literals
    except _Invalid as e:
        raise ValueError(str(e)) from None


def extract_equation(text: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` after the last ``</think>``, stripped;
    ``None`` when there is none.

    >>> extract_equation("<think><answer>1+1</answer></think> so <answer> 3*4 </answer>")
    '3*4'
    """
    think_end = text.rfind("</think>")
    if think_end >= 0:
        text = text[think_end + len("</think>") :]
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end) if end >= 0 else -1
    if start < 0:
        return None
    return text[start + len("<answer>") : end].strip()


_INTEGER = re.compile(r"\s*-?\s*[0-9]+\s*")


def _is_solution(equation: str, nums: list[int], target: Fraction) -> bool:
    if len(equation) > MAX_EQUATION_CHARS:
        return False
    lhs, eq, rhs = equation.partition("=")
    if eq:  # "expr = target": the right side must be the target, written as an integer
        if not _INTEGER.fullmatch(rhs) or int("".join(rhs.split())) != target:
            return False
    try:
        value, literals = evaluate(lhs)
    except ValueError:
        return False
    return sorted(literals) == sorted(nums) and value == target


def _as_int(name: str, value) -> int:
    """An integer from a data cell: int (numpy ints included), integral float, or numeric string."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
        if isinstance(value, (float, str)):
            try:
                as_fraction = Fraction(value)
            except (ValueError, OverflowError):
                as_fraction = None
            if as_fraction is not None and as_fraction.denominator == 1:
                return int(as_fraction)
    raise ValueError(f"countdown: column {name!r} must hold integers, got {value!r}")


@reward("countdown")
def countdown(completions: list, nums: list, target: list, *, format_score: float = 0.0, **_) -> list[float | None]:
    """1.0 if the answer's equation uses each of ``nums`` exactly once and equals ``target``.

    The equation is ``expr`` or ``expr = target`` over integers with ``+ - * /``, parentheses and
    unary minus (no decimals, no other symbols); each number in ``nums`` must appear as a literal
    exactly once, and no other literal may appear. An ``<answer>`` whose equation is wrong, malformed
    or uses the wrong numbers scores ``format_score`` (TinyZero uses 0.1); no ``<answer>`` at all
    scores 0.0. A row whose ``nums`` or ``target`` is missing or empty scores ``None``.

    >>> countdown(
    ...     ["<think>...</think><answer>(100 - 4) / 4</answer>", "<answer>100 - 4 - 4</answer>", "24"],
    ...     nums=[[100, 4, 4]] * 3, target=[24] * 3, format_score=0.1)
    [1.0, 0.1, 0.0]
    """
    if len(nums) != len(completions) or len(target) != len(completions):
        raise ValueError(
            f"countdown: got {len(completions)} completions but {len(nums)} 'nums' and {len(target)} 'target' values"
        )
    scores: list[float | None] = []
    for completion, row_nums, row_target in zip(completions, nums, target):
        if row_nums is None or len(row_nums) == 0 or row_target is None:
            scores.append(None)
            continue
        numbers = [_as_int("nums", x) for x in row_nums]
        goal = Fraction(_as_int("target", row_target))
        equation = extract_equation(completion_text(completion))
        if equation is None:
            scores.append(0.0)
        else:
            scores.append(1.0 if _is_solution(equation, numbers, goal) else float(format_score))
    return scores
