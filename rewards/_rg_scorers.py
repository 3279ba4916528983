"""Our scorers for the reasoning-gym datasets whose own scorer evaluates text (see
:mod:`rewards.reasoning_gym`): the same rules, with parsers that never ``eval``.

Each takes ``(answer, entry, config)`` (the extracted answer, the reasoning-gym entry, the dataset's
settings) and returns reasoning-gym's score for it; where a rule deliberately differs, its docstring
says how.

>>> OURS["countdown"]("(1 + 2) * 4", {"metadata": {"numbers": [1, 2, 4], "target": 12}}, {})
1.0
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from typing import Callable

from rewards._literal import parse_literal
from rewards.countdown import evaluate

def _countdown(answer: str, entry: dict, config: dict) -> float:
    """reasoning-gym's countdown rule (1.0 solved, 0.05 wrong numbers or value, 0.01 unparsable),
    with :func:`rewards.countdown.evaluate` in place of ``sympy.parse_expr``."""
    if not answer.strip():
        return 0.01
    try:
        value, literals = evaluate(answer)
    except ValueError:
        return 0.01
    meta = entry["metadata"]
    if sorted(literals) != sorted(int(n) for n in meta["numbers"]):
        return 0.05
    return 1.0 if abs(value - Fraction(meta["target"])) <= Fraction(1, 10**6) else 0.05


def _puzzle24(answer: str, entry: dict, config: dict) -> float:
    """1.0 when the answer uses exactly the puzzle's four numbers and equals 24, else 0.01.

    Stricter than reasoning-gym's own rule, on purpose: it accepts any four numbers within the
    config's range (``6*4*1*1`` solves every puzzle) and truncates the value with ``int()``
    (an answer worth 24.5 counts as 24)."""
    try:
        value, literals = evaluate(answer.strip())
    except ValueError:
        return 0.01
    numbers = entry["metadata"].get("numbers")
    if numbers is None or sorted(literals) != sorted(int(n) for n in numbers):
        return 0.01
    return 1.0 if value == 24 else 0.01


def _grid(rows) -> str:
    return "\n".join(" ".join(str(x) for x in row) for row in rows)


def _n_queens(answer: str, entry: dict, config: dict) -> float:
    valid = entry["metadata"]["valid_answers"]
    if answer in valid:
        return 1.0
    try:
        board = "\n".join(" ".join(x for x in row) for row in parse_literal(answer))
    except (ValueError, TypeError):
        return 0.0
    return 0.5 if board in valid else 0.0


def _spiral_matrix(answer: str, entry: dict, config: dict) -> float:
    oracle, answer = entry["answer"].strip(), answer.strip()
    if not answer:
        return 0.0
    if answer == oracle:
        return 1.0
    try:
        flat = " ".join(str(item) for item in parse_literal(answer))
    except (ValueError, TypeError):
        return 0.0
    return 0.1 if flat == oracle else 0.0


def _string_insertion(answer: str, entry: dict, config: dict) -> float:
    if answer == entry["answer"]:
        return 1.0
    try:
        joined = "".join(parse_literal(answer))
    except (ValueError, TypeError):
        return 0.0
    return 0.1 if joined == entry["answer"] else 0.0


def _binary_matrix(answer: str, entry: dict, config: dict) -> float:
    if answer == entry["answer"]:
        return 1.0
    try:
        return 0.1 if _grid(parse_literal(answer)) == entry["answer"] else 0.0
    except (ValueError, TypeError):
        return 0.0


def _number_sorting(answer: str, entry: dict, config: dict) -> float:
    """reasoning-gym's rule (JSON list, sorted the asked way, each within 1 of the gold), with the
    gold read by :func:`parse_literal` where reasoning-gym falls back to ``eval``."""
    try:
        user = json.loads(answer.replace("'", '"'))
        try:
            gold = json.loads(entry["answer"])
        except json.JSONDecodeError:
            gold = parse_literal(entry["answer"])
        if not isinstance(user, list) or len(user) != len(gold):
            return 0.0
        xs, ys = [float(v) for v in user], [float(v) for v in gold]
    except (ValueError, TypeError):
        return 0.0
    descending = entry["metadata"]["direction"] != "ascending"
    if xs != sorted(xs, reverse=descending):
        return 0.0
    return 1.0 if all(abs(x - y) <= 1 for x, y in zip(xs, ys)) else 0.0


def _bitwise_arithmetic(answer: str, entry: dict, config: dict) -> float:
    """1.0 when the answer (decimal, ``0x``, ``0b`` or ``0o``) equals the gold, else 0.0; the gold is
    the entry's ``answer`` (reasoning-gym ``eval``s the problem instead)."""
    try:
        return 1.0 if int(answer, 0) == int(entry["answer"], 0) else 0.0
    except ValueError:
        return 0.0


_POLY_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z][A-Za-z0-9_]*)|(\*\*|[*/+-]))")
SYMPY_NAMES = frozenset({"E", "I", "S", "N", "O", "Q", "pi", "oo", "zoo", "nan"})
"""Names sympy's ``parse_expr`` reads as constants or functions, not as symbols: not a variable here."""
MAX_POLYNOMIAL_CHARS = 5_000
MAX_EXPONENT = 1_000
Polynomial = dict[tuple[tuple[str, int], ...], Fraction]


def polynomial(text: str) -> Polynomial | None:
    """A sum of monomials with rational coefficients as ``{((var, power), ...): coefficient}``, like
    terms combined and zero terms dropped; None for anything else (parentheses, ``^``, decimals, a
    division by anything but an integer, sympy's constant names). Nothing is evaluated.

    >>> polynomial("3*x**2 - x*x + 2 - 2") == polynomial("2*x**2")
    True
    >>> polynomial("-2*X**6/3 + 5/4")
    {(('X', 6),): Fraction(-2, 3), (): Fraction(5, 4)}
    >>> polynomial("(x + 1)*x") is None
    True
    """
    if len(text) > MAX_POLYNOMIAL_CHARS:
        return None
    tokens, pos = [], 0
    while pos < len(text):
        m = _POLY_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            return None
        tokens.append(m.group(1) or m.group(2) or m.group(3))
        pos = m.end()
    terms: Polynomial = {}
    i = 0
    while True:
        sign = 1
        while i < len(tokens) and tokens[i] in "+-":  # a run of signs: "- -3" is 3
            sign, i = (-sign if tokens[i] == "-" else sign), i + 1
        term = _monomial(tokens, i, sign)
        if term is None:
            return None
        key, coefficient, i = term
        terms[key] = terms.get(key, 0) + coefficient
        if i >= len(tokens):
            break
        if tokens[i] not in "+-":
            return None
    return {k: c for k, c in terms.items() if c}


def _monomial(tokens: list[str], i: int, sign: int):
    """``factor (('*' | '/') factor)*`` from ``tokens[i]``: ``(key, coefficient, next i)`` or None;
    a factor is an integer or ``var`` [``** INT``]; only an integer may follow ``/``."""
    coefficient, powers, divide = Fraction(sign), {}, False
    while True:
        if i >= len(tokens):
            return None
        tok = tokens[i]
        if tok.isdigit():
            if divide and int(tok) == 0:
                return None
            coefficient, i = (coefficient / int(tok) if divide else coefficient * int(tok)), i + 1
        elif tok[0].isalpha() and not divide and tok not in SYMPY_NAMES:
            power, i = 1, i + 1
            if i < len(tokens) and tokens[i] == "**":
                if i + 1 >= len(tokens) or not tokens[i + 1].isdigit() or int(tokens[i + 1]) > MAX_EXPONENT:
                    return None
                power, i = int(tokens[i + 1]), i + 2
            powers[tok] = powers.get(tok, 0) + power
        else:
            return None
        if i < len(tokens) and tokens[i] in ("*", "/"):
            divide, i = tokens[i] == "/", i + 1
            continue
        return tuple(sorted((v, p) for v, p in powers.items() if p)), coefficient, i


def derivative(poly: Polynomial, var: str) -> Polynomial:
    """d/d``var`` of a :func:`polynomial`; other names are constants.

    >>> derivative(polynomial("x**3/3 + C + y*x"), "x") == polynomial("x**2 + y")
    True
    """
    out: Polynomial = {}
    for key, c in poly.items():
        powers = dict(key)
        p = powers.get(var, 0)
        if p == 0:
            continue
        powers[var] = p - 1
        k = tuple(sorted((v, q) for v, q in powers.items() if q))
        out[k] = out.get(k, 0) + c * p
    return {k: c for k, c in out.items() if c}


def _simple_integration(answer: str, entry: dict, config: dict) -> float:
    """reasoning-gym's rule (1.0 when the answer's derivative is the integrand, ``+ C`` optional),
    exactly, for an answer written as a sum of monomials (:func:`polynomial`), as every
    simple_integration answer is; theirs also credits an unexpanded form, which scores 0.0 here."""
    mine, integrand = polynomial(answer), polynomial(entry["metadata"]["integrand"])
    if mine is None or integrand is None:
        return 0.0
    return 1.0 if derivative(mine, entry["metadata"]["variable"]) == integrand else 0.0


def _polynomial_multiplication(answer: str, entry: dict, config: dict) -> float:
    """reasoning-gym's rule, 1.0 when the answer is the gold polynomial written out as a sum of
    monomials (as sympy's structural equality after ``parse_expr``), else 0.0; by :func:`polynomial`.
    One difference: parentheses are not read, so ``(gold)`` scores 0.0 here and 1.0 there."""
    mine, gold = polynomial(answer), polynomial(entry["answer"])
    return 1.0 if mine is not None and gold is not None and mine == gold else 0.0


OURS: dict[str, Callable[[str, dict, dict], float]] = {
    "countdown": _countdown, "puzzle24": _puzzle24, "n_queens": _n_queens, "spiral_matrix": _spiral_matrix,
    "string_insertion": _string_insertion, "binary_matrix": _binary_matrix, "number_sorting": _number_sorting,
    "bitwise_arithmetic": _bitwise_arithmetic, "polynomial_multiplication": _polynomial_multiplication,
    "simple_integration": _simple_integration,
}
"""Datasets scored by our parsers instead of reasoning-gym's ``eval``/``parse_expr``."""
