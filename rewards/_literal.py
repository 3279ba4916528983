"""A small, bounded parser of Python literals: what ``eval`` is used for in some reasoning-gym scorers.

Accepts ints, floats, strings (single or double quotes, the common backslash escapes), ``True``,
``False``, ``None``, lists ``[...]`` and tuples ``(...)`` (a bare ``1, 2`` at the top level is a
tuple, as ``eval`` reads it). Nothing else: no names, calls, operators, dicts or sets. It never
calls ``eval``, ``compile`` or ``ast``; input over :data:`MAX_CHARS` characters or nested deeper
than :data:`MAX_DEPTH` is rejected, so hostile text costs linear time.

>>> parse_literal("[['Q', '_'], ['_', 'Q']]")
[['Q', '_'], ['_', 'Q']]
>>> parse_literal("'a', 'b'")
('a', 'b')
>>> parse_literal("__import__('os').system('touch F')")
Traceback (most recent call last):
...
ValueError: not a literal at character 0: '_'
"""

from __future__ import annotations

import re

MAX_CHARS = 20_000
MAX_DEPTH = 32
_NUMBER = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
_WORDS = {"True": True, "False": False, "None": None}


class _Parser:
    def __init__(self, text: str):
        self.s, self.i = text, 0

    def fail(self, what: str = "not a literal"):
        shown = self.s[self.i] if self.i < len(self.s) else "end of text"
        raise ValueError(f"{what} at character {self.i}: {shown!r}")

    def skip(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def value(self, depth: int):
        if depth > MAX_DEPTH:
            self.fail("nested too deeply")
        self.skip()
        if self.i >= len(self.s):
            self.fail()
        ch = self.s[self.i]
        if ch in "[(":
            return self.sequence(depth)
        if ch in "'\"":
            return self.string()
        for word, v in _WORDS.items():
            if self.s.startswith(word, self.i) and not self.s[self.i + len(word):self.i + len(word) + 1].isalnum():
                self.i += len(word)
                return v
        m = _NUMBER.match(self.s, self.i)
        if not m:
            self.fail()
        self.i = m.end()
        text = m.group()
        return float(text) if any(c in text for c in ".eE") else int(text)

    def sequence(self, depth: int):
        close = "]" if self.s[self.i] == "[" else ")"
        self.i += 1
        items, trailing_comma = [], False
        while True:
            self.skip()
            if self.i < len(self.s) and self.s[self.i] == close:
                self.i += 1
                break
            items.append(self.value(depth + 1))
            self.skip()
            if self.i < len(self.s) and self.s[self.i] == ",":
                self.i += 1
                trailing_comma = True
                continue
            trailing_comma = False
            if self.i < len(self.s) and self.s[self.i] == close:
                self.i += 1
                break
            self.fail(f"expected ',' or {close!r}")
        if close == "]":
            return items
        if len(items) == 1 and not trailing_comma:
            return items[0]  # (x) is x
        return tuple(items)

    def string(self) -> str:
        quote = self.s[self.i]
        self.i += 1
        out = []
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == quote:
                self.i += 1
                return "".join(out)
            if ch == "\\":
                nxt = self.s[self.i + 1:self.i + 2]
                if nxt not in _ESCAPES:
                    self.fail("unsupported escape")
                out.append(_ESCAPES[nxt])
                self.i += 2
                continue
            if ch == "\n":
                self.fail("newline in a string")
            out.append(ch)
            self.i += 1
        self.fail("unterminated string")


def parse_literal(text: str):
    """The value of a Python literal (see the module docstring); ``ValueError`` for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise ValueError(f"longer than {MAX_CHARS} characters")
    p = _Parser(text)
    first = p.value(0)
    p.skip()
    if p.i == len(p.s):
        return first
    if p.s[p.i] != ",":  # a bare tuple "1, 2" at the top level
        p.fail("unexpected text")
    items = [first]
    while p.i < len(p.s) and p.s[p.i] == ",":
        p.i += 1
        p.skip()
        if p.i == len(p.s):
            break
        items.append(p.value(0))
        p.skip()
    if p.i != len(p.s):
        p.fail("unexpected text")
    return tuple(items)
