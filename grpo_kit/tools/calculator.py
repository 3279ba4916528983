"""The ``calculator`` tool: exact rational arithmetic on untrusted text, no sandbox needed.

It evaluates ``+ - * /`` and parentheses over integers with the Countdown reward's parser
(:func:`rewards.countdown.evaluate`: a bounded recursive-descent parser to
:class:`fractions.Fraction`, never ``eval``; at most 1,000 characters and 64 nested parentheses).
With no exponent in the grammar a value's size grows only linearly with the text's length, so a
call costs microseconds.
"""

from __future__ import annotations

from fractions import Fraction

from rewards.countdown import evaluate


def format_value(v: Fraction) -> str:
    """``12``, ``-3``, or an exact fraction ``7/2``."""
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def calculator(expression: str) -> str:
    """The exact value of ``expression``, or ``error: REASON`` (a model reads the error and may retry).

    >>> calculator("37 * 48"), calculator("(1 + 2) / 4"), calculator("2 - 5")
    ('1776', '3/4', '-3')
    >>> calculator("1 / (2 - 2)"), calculator("__import__('os')")
    ('error: division by zero', "error: unexpected character '_'")
    """
    if not isinstance(expression, str):
        return f"error: expected an expression as text, got {type(expression).__name__}"
    try:
        value, _ = evaluate(expression)
    except ValueError as e:
        return f"error: {e}"
    return format_value(value)
