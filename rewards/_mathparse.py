"""A small, bounded LaTeX/ASCII maths parser for :mod:`rewards.math`.

Model output is untrusted, so nothing here calls ``eval``, ``exec``, ``sympify`` or a LaTeX
parser built on them: :func:`normalize` rewrites the surface (``\\dfrac`` -> ``\\frac``, units,
degrees, ``\\%``, ...), :func:`tokenize` scans it with one linear regex and :func:`parse` is a
recursive-descent parser that builds a tree of plain tuples:

==========================  ===============================================================
``("num", Fraction, kind)`` a literal; ``kind`` is ``"int"``, ``"dec"`` or ``"frac"``
``("sym", name)``           a variable (``x``, ``x_1``, ``\\alpha``)
``("const", name)``         ``pi``, ``e``, ``i`` (the imaginary unit) or ``inf``
``("add", [t, ...])``       a sum; ``("neg", t)`` and ``("pm", t)`` (a ``\\pm`` term) inside
``("mul", [f, ...])``       a product; ``("inv", f)`` is ``1/f``
``("pow", b, e)``           ``b^e``; ``("root", n, x)`` the ``n``-th root (``n`` a tree)
``("fn", name, x)``         ``sin`` ... ``exp``; ``("log", base|None, x)``; ``("abs", x)``
``("fact", x)``             ``x!``; ``("binom", n, k)``
``("rel", [op,..], [x,..])`` a chain of relations, ``op`` in ``= < <= > >= !=``
``("ratio", [x, ...])``     ``a : b``
``("list", [v, ...])``      a bare list ``1, 2`` (items joined by ``,``, ``;``, ``and``, ``or``)
``("set", [v, ...])``       ``\\{1, 2\\}``
``("tuple", o, c, [v,..])`` ``(1, 2)``, ``[1, 2)``: ``o``/``c`` are the brackets
``("union", [v, ...])``     ``A \\cup B``
``("matrix", [[x, ..],..])`` a ``pmatrix``/``bmatrix``/``matrix`` environment
==========================  ===============================================================

Numbers separated only by a space are never a product: ``a b/c`` (``0 <= b < c``) is a mixed
number, digit groups of three (``1 000``) are one number, anything else (``2 3``, ``11 6/6``) is a
:class:`ParseError`.

Bounds: nesting deeper than :data:`MAX_DEPTH` raises :class:`ParseError` (no ``RecursionError``
on 10,000 nested parentheses); the caller caps the input length.

>>> parse(tokenize(normalize(r"\\dfrac{1}{x}")[0]))
('mul', [('num', Fraction(1, 1), 'int'), ('inv', ('sym', 'x'))])
>>> parse(tokenize("2x"))
('mul', [('num', Fraction(2, 1), 'int'), ('sym', 'x')])
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_DEPTH = 60

FUNCS = {
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "exp", "ln", "log", "lg",
}  # fmt: skip
TRIG_INVERSE = {"sin": "arcsin", "cos": "arccos", "tan": "arctan"}
# ASCII words that are maths, not text (anything else of 3+ letters makes an answer text)
MATH_WORDS = FUNCS | {"sqrt", "pi", "inf", "infty", "frac", "dfrac", "cup", "cdot", "times"}
GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
    "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon",
    "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma",
    "Phi", "Psi", "Omega",
}  # fmt: skip
RELOPS = {
    "=": "=", "<": "<", ">": ">", r"\le": "<=", r"\leq": "<=", r"\leqslant": "<=",
    r"\ge": ">=", r"\geq": ">=", r"\geqslant": ">=", r"\lt": "<", r"\gt": ">",
    r"\ne": "!=", r"\neq": "!=",
}  # fmt: skip
MATRIX_ENVS = {"pmatrix", "bmatrix", "Bmatrix", "vmatrix", "matrix", "smallmatrix", "array"}


class ParseError(ValueError):
    """The text is not maths this parser reads (or it is too deep)."""


# ----------------------------------------------------------------------------- normalisation

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": r"\times ", "\u00f7": r"\div ", "\u00b7": r"\cdot ",
    "\u22c5": r"\cdot ", "\u03c0": r"\pi ", "\u221e": r"\infty ", "\u221a": r"\sqrt",
    "\u2264": r"\le ", "\u2265": r"\ge ", "\u2260": r"\ne ", "\u222a": r"\cup ", "\u00b0": "",
    "\u00bd": "(1/2)", "\u2009": " ", "\u00a0": " ",
}  # fmt: skip
_DROP = re.compile(
    r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|displaystyle|textstyle|"
    r"limits|mathrm(?=\{[a-zA-Z]\}))(?![a-zA-Z])|\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ"
    r"|\\degree|(?<!\\)\\!"
)
_SPACES = re.compile(r"(?<!\\)\\[,;: ]|\\q?quad|~")
_THOUSANDS_CMD = re.compile(r"(?<=\d)\s*(?:\{\s*,\s*\}|\\,|,\s*\\!)\s*(?=\d{3}(?!\d))")
_SPACED_THOUSANDS = re.compile(r"(?<![\d.,/^_])\d{1,3}(?:[ \t]\d{3})+(?![\d/])")
_MIXED = re.compile(r"(?<![\d.,/^_}])(\d+)[ \t]+(\d+)/(\d+)(?![\d./^_])")
_JOIN_WORD = re.compile(r"\s*(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])\s*")
_COMMAS = re.compile(r"(?:\s*,){2,}")
_PERCENT_WORD = re.compile(r"\s*(?:percentage|percent|pct)\.?$")
_APPROX = re.compile(r"\\approx(?![a-zA-Z])|\u2248")
_DOUBLE_ESCAPE = re.compile(r"\\\\(?=[a-zA-Z{])")
_NAME = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?")
_WRAPPERS = ("text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mathit", "mbox",
             "operatorname", "textnormal", "mathsf", "boldsymbol")  # fmt: skip
_WRAP_RE = re.compile(r"\\(" + "|".join(_WRAPPERS) + r")\s*\{")
_UNIT_RE = re.compile(r"[A-Za-z][A-Za-z .]*")
_UNIT_POWER = re.compile(r"\s*\^\s*(?:\{\s*[23]\s*\}|[23])")
_WHOLE_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_WS = re.compile(r"\s+")
_MEMBER = re.compile(r"^[a-zA-Z]\s*\\in(?![a-zA-Z])\s*")


def normalize(s: str, decimal_comma: bool = False) -> tuple[str, bool]:
    """Surface rewrites; returns ``(text, had_percent)``. With ``decimal_comma`` a whole answer
    ``1,22`` is the number 1.22 (otherwise the list ``1, 22``).

    >>> normalize(r"\\$1{,}000.50")
    ('1000.50', False)
    >>> normalize(r"50\\%")
    ('50', True)
    >>> normalize(r"5 \\text{ cm}^2")
    ('5', False)
    >>> normalize(r"30^\\circ")
    ('30', False)
    >>> normalize("1 000 4/9"), normalize(r"19, 46, \\text{ and } 82")
    (('1000\\\\frac{4}{9}', False), ('19, 46, 82', False))
    """
    s = s.strip()
    for src, dst in _UNICODE.items():
        if src in s:
            s = s.replace(src, dst)
    s = s.replace(r"\$", "").replace("$", "")
    if "\\\\" in s and "\\begin" not in s:
        s = _DOUBLE_ESCAPE.sub(r"\\", s)  # "-2 \\\\le x" (a doubly escaped command) -> "-2 \\le x"
    if s.startswith((r"\(", r"\[")) and s.endswith((r"\)", r"\]")):
        s = s[2:-2]
    s = _THOUSANDS_CMD.sub("", s)  # before _DROP: "11,\\!111" is one number
    s = _DROP.sub("", s)
    s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac").replace(r"\cfrac", r"\frac")
    s = s.replace(r"\dbinom", r"\binom").replace(r"\tbinom", r"\binom")
    percent = "%" in s
    if percent:
        s = s.replace(r"\%", "").replace("%", "")
    s = _SPACES.sub(" ", s)
    s = _unwrap_text(s)
    s = _SPACED_THOUSANDS.sub(lambda m: m.group(0).replace(" ", "").replace("\t", ""), s)
    s = _MIXED.sub(_mixed_number, s)  # before newlines become spaces: "11\n5/6" is not a mixed number
    s = _WS.sub(" ", s).strip()
    s = _strip_trailing_punctuation(s)
    if _PERCENT_WORD.search(s):
        s, percent = _PERCENT_WORD.sub("", s), True
    s = _approx(s)
    s = _JOIN_WORD.sub(",", s) if "and" in s or "or" in s else s
    s = _COMMAS.sub(",", s).strip(", ") if "," in s else s
    s = _MEMBER.sub("", s, count=1)  # x \in [1, 2] -> [1, 2]
    s = _strip_unit_words(s)
    if decimal_comma and _DECIMAL_COMMA.fullmatch(s):
        s = s.replace(",", ".")
    elif _WHOLE_THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s, percent


_DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")


def _mixed_number(m: re.Match) -> str:
    """``4 4/9`` -> ``4\\frac{4}{9}`` when ``0 <= b < c``; otherwise left alone (and unparseable)."""
    whole, num, den = m.group(1), int(m.group(2)), int(m.group(3))
    if not 0 <= num < den:
        return m.group(0)
    return f"{whole}\\frac{{{num}}}{{{den}}}"


def _strip_trailing_punctuation(s: str) -> str:
    """Sentence punctuation after an answer (``\\frac13,``, ``(1,2).``), not an ellipsis."""
    for _ in range(3):
        if s.endswith(("...", r"\dots", r"\ldots", r"\cdots")) or not s or s[-1] not in ".,;:":
            return s
        s = s[:-1].rstrip()
    return s


def _approx(s: str) -> str:
    """``x = 1/3 \\approx 0.33`` -> ``x = 1/3``: a value before ``\\approx`` is the exact answer;
    ``x \\approx 11`` (only a name before it) -> ``x = 11``."""
    m = _APPROX.search(s)
    if m is None:
        return s
    left, right = s[: m.start()].strip(), s[m.end() :].strip()
    if _NAME.fullmatch(left) and right:
        return f"{left} = {_APPROX.split(right)[0].strip()}"
    return left


def _unwrap_text(s: str) -> str:
    """``\\text{X}`` -> ``X``; a unit word after a number (``5\\text{ cm}``) is dropped;
    ``\\text{ or }`` / ``\\text{and}`` become commas."""
    out, pos = [], 0
    for _ in range(200):
        m = _WRAP_RE.search(s, pos)
        if m is None:
            break
        end = _match_brace(s, m.end() - 1)
        if end < 0:
            break
        inner = s[m.end() : end].strip()
        before = s[pos : m.start()]
        out.append(before)
        done = "".join(out).rstrip()
        after = end + 1
        if inner.lower() in ("or", "and"):
            out.append(",")
        elif done and done[-1] in "0123456789})" and _UNIT_RE.fullmatch(inner) and m.group(1) != "mathbf":
            um = _UNIT_POWER.match(s, after)  # cm^2
            if um:
                after = um.end()
        else:
            out.append(inner)
        pos = after
    out.append(s[pos:])
    return "".join(out)


def _strip_unit_words(s: str) -> str:
    """Drop trailing plain words (``5 dollars``, ``12 sq ft``) after a number or group."""
    for _ in range(6):
        head, sep, last = s.rpartition(" ")
        word = last.rstrip(".")
        if not sep or not word.isalpha() or len(word) < 2 or word.lower() in MATH_WORDS:
            break
        if not head.rstrip() or head.rstrip()[-1] not in "0123456789})":
            if head.rstrip().split(" ")[-1].isalpha() and len(head.split(" ")) > 1:
                s = head.rstrip()  # a run of unit words: keep peeling
                continue
            break
        s = head.rstrip()
    return s


def _match_brace(s: str, i: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``s[i]``, or -1."""
    depth = 0
    for j in range(i, len(s)):
        c = s[j]
        if c == "{" and s[j - 1 : j] != "\\":
            depth += 1
        elif c == "}" and s[j - 1 : j] != "\\":
            depth -= 1
            if depth == 0:
                return j
    return -1


def looks_like_text(s: str) -> bool:
    """True when a normalised answer holds an English word (3+ letters, not a maths name).

    >>> looks_like_text("Monday"), looks_like_text(r"\\sin x + xy"), looks_like_text("sqrt(2)")
    (True, False, False)
    """
    s = _SUBSCRIPT.sub("_", s) if "_" in s else s
    for m in _WORD.finditer(_ENV.sub(" ", s) if "\\begin" in s else s):
        if m.start() > 0 and s[m.start() - 1] == "\\":
            continue
        w = m.group(0)
        if (len(w) >= 3 and w.lower() not in MATH_WORDS) or (w.lower() in _SHORT_WORDS and w == s.strip()):
            return True
    return False


_SUBSCRIPT = re.compile(r"_\{[^{}]*\}|_[A-Za-z0-9]")
_SHORT_WORDS = {"no", "ok"}  # two-letter answers that are words, not products of variables
_WORD = re.compile(r"[A-Za-z]+")
_ENV = re.compile(r"\\(?:begin|end)\s*\{[a-zA-Z*]*\}")

# ----------------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
    |(?P<begin>\\begin\s*\{\s*[a-zA-Z*]+\s*\})
    |(?P<end>\\end\s*\{\s*[a-zA-Z*]+\s*\})
    |(?P<cmd>\\[a-zA-Z]+|\\\\|\\[{}|])
    |(?P<word>[a-zA-Z]+)
    |(?P<op>[-+*/^_()\[\]{},;:=!|<>&'])""",
    re.X,
)
_ASCII_CMD = {"sqrt": r"\sqrt", "pi": r"\pi", "inf": r"\infty", "infty": r"\infty"}


def tokenize(s: str) -> list[tuple[str, str]]:
    """``[(kind, text), ...]`` with kind ``num``, ``sym``, ``cmd``, ``begin``, ``end``, ``op``.

    >>> tokenize(r"\\frac12+x")
    [('cmd', '\\\\frac'), ('num', '12'), ('op', '+'), ('sym', 'x')]
    """
    out: list[tuple[str, str]] = []
    pos, spaced = 0, False
    for m in _TOKEN.finditer(s):
        if m.start() != pos:
            raise ParseError(f"unexpected character {s[pos]!r}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group(0)
        if kind == "ws":
            spaced = True
            continue
        script = out[-2:-1] in ([("op", "_")], [("op", "^")])  # x_1 2, 2^3 4: a script, then a number
        if kind == "num" and spaced and out and out[-1][0] == "num" and not script:
            raise ParseError("numbers separated by a space")  # never a product: "2 1/2", "1 000"
        spaced = False
        if kind == "word":
            low = text.lower()
            if low in FUNCS:
                out.append(("cmd", "\\" + low))
            elif low in _ASCII_CMD:
                out.append(("cmd", _ASCII_CMD[low]))
            else:
                out.extend(("sym", c) for c in text)
            continue
        if kind in ("begin", "end"):
            text = text[text.index("{") + 1 : -1].strip()
        out.append((kind, text))  # type: ignore[arg-type]
    if pos != len(s):
        raise ParseError(f"unexpected character {s[pos]!r}")
    return out


# ----------------------------------------------------------------------------- parser

_PRIMARY_CMDS = {r"\pi", r"\infty", r"\frac", r"\sqrt", r"\binom", r"\imath"} | {"\\" + f for f in FUNCS}
_PRIMARY_CMDS |= {"\\" + g for g in GREEK}


def parse(tokens: list[tuple[str, str]]):
    """The tree of a whole answer (see the module docstring); raises :class:`ParseError`."""
    if not tokens:
        raise ParseError("empty")
    p = _Parser(tokens)
    node = p.parse_list()
    if p.pos != len(tokens):
        raise ParseError(f"unexpected {tokens[p.pos][1]!r}")
    return node


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.toks = tokens
        self.pos = 0
        self.depth = 0
        self.abs_depth = 0

    # -- helpers
    def peek(self, k: int = 0) -> tuple[str, str]:
        i = self.pos + k
        return self.toks[i] if i < len(self.toks) else ("eof", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "eof":
            raise ParseError("unexpected end")
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok[1] != text:
            raise ParseError(f"expected {text!r}, got {tok[1]!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("nesting too deep")

    # -- grammar
    def parse_list(self):
        """Items joined by ``,``; groups joined by ``;`` (``p=5, q=2; p=7, q=2`` is two pairs)."""
        groups, items = [], [self.parse_rel()]
        while self.peek()[1] in (",", ";"):
            if self.take()[1] == ";":
                groups.append(items)
                items = []
            items.append(self.parse_rel())
        if groups:
            return _grouped([*groups, items])
        return items[0] if len(items) == 1 else ("list", items)

    def parse_rel(self):
        operands, ops = [self.parse_ratio()], []
        while True:
            kind, text = self.peek()
            op = RELOPS.get(text) if kind in ("op", "cmd") else None
            if text == "!" and self.peek(1)[1] == "=":
                op = "!"
            if op is None:
                break
            self.take()
            if op in "<>!" and self.peek()[1] == "=":
                self.take()
                op += "="
            ops.append(op)
            operands.append(self.parse_ratio())
        return operands[0] if not ops else ("rel", ops, operands)

    def parse_ratio(self):
        items = [self.parse_union()]
        while self.peek()[1] == ":":
            self.take()
            items.append(self.parse_union())
        return items[0] if len(items) == 1 else ("ratio", items)

    def parse_union(self):
        items = [self.parse_add()]
        while self.peek()[1] == r"\cup":
            self.take()
            items.append(self.parse_add())
        return items[0] if len(items) == 1 else ("union", items)

    def parse_add(self):
        terms = [self.parse_term()]
        while True:
            t = self.peek()[1]
            if t == "+":
                self.take()
                terms.append(self.parse_term())
            elif t == "-":
                self.take()
                terms.append(("neg", self.parse_term()))
            elif t in (r"\pm", r"\mp"):
                self.take()
                terms.append(("pm", self.parse_term()))
            else:
                break
        return terms[0] if len(terms) == 1 else ("add", terms)

    def parse_term(self):
        factors = [self.parse_unary()]
        while True:
            kind, t = self.peek()
            if t in ("*", r"\cdot", r"\times"):
                self.take()
                factors.append(self.parse_unary())
            elif t in ("/", r"\div"):
                self.take()
                factors.append(("inv", self.parse_unary()))
            elif self.starts_primary(kind, t):
                f = self.parse_power()
                whole = factors[0] if len(factors) == 1 and _is_lit(f, "frac") else None
                if whole is not None and _is_lit(whole, "int"):
                    factors[0] = ("num", whole[1] + f[1], "dec")  # mixed number 2\frac12
                elif whole is not None and whole[0] == "neg" and _is_lit(whole[1], "int"):
                    factors[0] = ("neg", ("num", whole[1][1] + f[1], "dec"))  # -2\frac12 = -5/2
                else:
                    factors.append(f)
            else:
                break
        return factors[0] if len(factors) == 1 else ("mul", factors)

    def starts_primary(self, kind: str, t: str) -> bool:
        if kind in ("num", "sym", "begin"):
            return True
        if kind == "cmd":
            return t in _PRIMARY_CMDS
        return t in ("(", "{") or (t == "|" and self.abs_depth == 0)

    def parse_unary(self):
        t = self.peek()[1]
        if t in ("-", "+", r"\pm", r"\mp"):
            self.take()
            self.enter()
            inner = self.parse_unary()
            self.depth -= 1
            return inner if t == "+" else ("neg", inner) if t == "-" else ("pm", inner)
        return self.parse_power()

    def parse_power(self):
        base = self.parse_postfix()
        if self.peek()[1] != "^":
            return base
        self.take()
        self.enter()
        exp = self.parse_exponent()
        self.depth -= 1
        return ("pow", base, exp)

    def parse_exponent(self):
        t = self.peek()[1]
        if t in ("-", "+"):
            self.take()
            self.enter()
            inner = self.parse_exponent()
            self.depth -= 1
            return ("neg", inner) if t == "-" else inner
        return self.parse_power()

    def parse_postfix(self):
        node = self.primary()
        while self.peek()[1] == "!" and self.peek(1)[1] != "=":
            self.take()
            node = ("fact", node)
        return node

    # -- primaries
    def primary(self):
        kind, t = self.take()
        if kind == "num":
            return _number(t)
        if kind == "sym":
            return self.subscripted(t)
        if kind == "begin":
            return self.matrix(t)
        if kind == "cmd":
            return self.command(t)
        if t in ("(", "["):
            return self.bracket(t)
        if t == "{":
            return self.group("}", brace_set=True)
        if t == "|" and self.abs_depth == 0:
            self.enter()
            self.abs_depth += 1
            inner = self.parse_add()
            self.abs_depth -= 1
            self.expect("|")
            self.depth -= 1
            return ("abs", inner)
        raise ParseError(f"unexpected {t!r}")

    def subscripted(self, name: str):
        if name == "e":
            return ("const", "e")
        if name == "i":
            return ("const", "i")
        if self.peek()[1] != "_":
            return ("sym", name)
        self.take()
        kind, t = self.take()
        if t == "{":
            parts = []
            while self.peek()[1] != "}":
                parts.append(self.take()[1])
                if len(parts) > 20:
                    raise ParseError("subscript too long")
            self.take()
            t = "".join(parts)
        elif kind not in ("num", "sym"):
            raise ParseError("bad subscript")
        return ("sym", f"{name}_{t}")

    def group(self, close: str, brace_set: bool = False):
        self.enter()
        node = self.parse_list()
        self.expect(close)
        self.depth -= 1
        if node[0] == "list":
            if not brace_set:
                raise ParseError("a list inside a group")
            return ("set", node[1])  # {1, 2} read loosely as a set
        return node

    def bracket(self, open_: str):
        self.enter()
        items = [self.parse_rel()]
        while self.peek()[1] in (",", ";"):  # (0;-2;0) is a triple
            self.take()
            items.append(self.parse_rel())
        close = self.take()[1]
        self.depth -= 1
        if close not in (")", "]"):
            raise ParseError(f"unclosed {open_!r}")
        if len(items) == 1:
            if (open_, close) in (("(", ")"), ("[", "]")):
                return items[0]
            raise ParseError("a half-open bracket around one item")
        return ("tuple", open_, close, items)

    def arg(self):
        """A macro argument: ``{...}``, ``(...)`` (ASCII) or one bare character (``\\frac12``)."""
        kind, t = self.peek()
        if t == "{":
            self.take()
            return self.group("}")
        if t == "(":
            self.take()
            return self.bracket("(")
        if kind == "num":
            self.pos += 1
            if len(t) > 1 and not (t[1].isdigit() or t[1:2] == "." and t[2:3].isdigit()):
                raise ParseError(f"bad argument {t!r}")
            if len(t) > 1 and t[0].isdigit():
                self.pos -= 1
                self.toks = self.toks[: self.pos] + [("num", t[1:])] + self.toks[self.pos + 1 :]
                t = t[0]
            return ("num", Fraction(t), "int")
        if kind == "sym":
            self.take()
            return self.subscripted(t)
        if kind == "cmd" and (t in (r"\pi", r"\infty") or t[1:] in GREEK):
            self.take()
            return self.command(t)
        raise ParseError(f"bad argument {t!r}")

    def command(self, t: str):
        name = t[1:]
        if name == "pi":
            return ("const", "pi")
        if name == "infty":
            return ("const", "inf")
        if name == "imath":
            return ("const", "i")
        if name in GREEK:
            return self.subscripted("\\" + name) if self.peek()[1] == "_" else ("sym", name)
        if name in ("emptyset", "varnothing"):
            return ("set", [])
        if name == "{":
            return self.brace_set()
        self.enter()
        try:
            if name == "frac":
                num, den = self.arg(), self.arg()
                if _is_lit(num, "int") and _is_lit(den, "int") and den[1] != 0:
                    return ("num", num[1] / den[1], "frac")
                return ("mul", [num, ("inv", den)])
            if name == "binom":
                return ("binom", self.arg(), self.arg())
            if name == "sqrt":
                index = None
                if self.peek()[1] == "[":
                    self.take()
                    index = self.parse_add()
                    self.expect("]")
                x = self.arg()
                return ("pow", x, ("num", Fraction(1, 2), "frac")) if index is None else ("root", index, x)
            if name in FUNCS:
                return self.function(name)
            raise ParseError(f"unknown command {t!r}")
        finally:
            self.depth -= 1

    def brace_set(self):
        if self.peek()[1] == r"\}":
            self.take()
            return ("set", [])
        self.enter()
        items = [self.parse_rel()]
        while self.peek()[1] == ",":
            self.take()
            items.append(self.parse_rel())
        self.expect(r"\}")
        self.depth -= 1
        return ("set", items)

    def function(self, name: str):
        base = None
        if name == "log" and self.peek()[1] == "_":
            self.take()
            base = self.arg()
        elif name == "lg":
            name, base = "log", ("num", Fraction(10), "int")
        power = None
        if self.peek()[1] == "^":
            self.take()
            power = self.parse_exponent()
            if power == ("neg", ("num", Fraction(1), "int")) and name in TRIG_INVERSE:
                name, power = TRIG_INVERSE[name], None
        if self.peek()[1] in ("(", "{"):
            x = self.primary()
        else:  # \sin 2x, \log_2 8: the argument is the implicit product that follows
            factors = [self.parse_power()]
            while True:
                kind, t = self.peek()
                if not self.starts_primary(kind, t) or (kind == "cmd" and t[1:] in FUNCS):
                    break
                factors.append(self.parse_power())
            x = factors[0] if len(factors) == 1 else ("mul", factors)
        node = ("log", base, x) if name in ("log", "ln") else ("fn", name, x)
        return node if power is None else ("pow", node, power)

    def matrix(self, env: str):
        if env not in MATRIX_ENVS:
            raise ParseError(f"environment {env!r}")
        if env == "array" and self.peek()[1] == "{":  # the column spec {cc}
            while self.take()[1] != "}":
                pass
        self.enter()
        rows, row = [], []
        while True:
            kind, t = self.peek()
            if kind == "end":
                self.take()
                if t != env:
                    raise ParseError("mismatched environment")
                break
            row.append(self.parse_add())
            if self.peek()[0] == "end":
                continue
            sep = self.take()[1]
            if sep == "&":
                continue
            if sep == "\\\\":
                rows.append(row)
                row = []
                continue
            raise ParseError(f"unexpected {sep!r} in a matrix")
        if row:
            rows.append(row)
        self.depth -= 1
        if not rows or any(len(r) != len(rows[0]) for r in rows):
            raise ParseError("ragged matrix")
        return ("matrix", rows)


def _grouped(groups: list[list]):
    """``;``-joined groups: assignments to the same names in each group become one tuple per group
    (``p=5, q=2; p=7, q=2`` -> ``(5, 2), (7, 2)``); otherwise all items form one list."""
    names = [[g[2][0] if g[0] == "rel" and g[1] == ["="] else None for g in grp] for grp in groups]
    if len(groups[0]) > 1 and None not in names[0] and all(n == names[0] for n in names):
        return ("list", [("tuple", "(", ")", [g[2][1] for g in grp]) for grp in groups])
    items = [x for grp in groups for x in grp]
    return items[0] if len(items) == 1 else ("list", items)


def _number(t: str):
    """A literal; ``1e999999999`` is refused rather than expanded to a billion digits."""
    mantissa, _, exponent = t.lower().partition("e")
    if exponent and abs(int(exponent)) > 400:
        raise ParseError("exponent too large")
    return ("num", Fraction(t), "int" if t.isdigit() else "dec")


def _is_lit(node, kind: str) -> bool:
    return node[0] == "num" and node[2] == kind
