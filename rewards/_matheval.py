"""Bounded evaluation and comparison of the trees built by :mod:`rewards._mathparse`.

Two evaluators:

- :func:`exact` computes a symbol-free tree as an exact :class:`~fractions.Fraction`, or returns
  ``None`` when the value is not rational (``\\sqrt2``, ``\\pi``) or would be too big (an integer
  power whose result exceeds :data:`MAX_BITS` bits is never computed).
- :func:`evalf` computes a tree as a complex float at a point (a value per variable); it raises
  :class:`EvalError` (overflow, division by zero, a non-finite result).

:func:`values_equal` compares two whole answers: expressions at :data:`N_POINTS` pseudo-random
points (the same points for both sides, derived from the variable names), equations up to a
nonzero factor, sets unordered, tuples/intervals ordered with their brackets, matrices cell by cell.

>>> from rewards._mathparse import parse, tokenize
>>> t = lambda s: parse(tokenize(s))
>>> values_equal(t("x^2-1"), t("(x-1)(x+1)")), values_equal(t("x^2-1"), t("(x-1)^2"))
(True, False)
>>> exact(t("9^{9^{9^9}}")) is None
True
"""

from __future__ import annotations

import cmath
import math
import random
from fractions import Fraction
from functools import lru_cache

MAX_BITS = 40_000  # ~12,000 decimal digits: larger exact results are not computed
N_POINTS = 4
REL_TOL = 1e-8
MAX_ITEMS = 64


class EvalError(ArithmeticError):
    """A tree has no finite value at a point."""


# ----------------------------------------------------------------------------- exact


def exact(node) -> Fraction | None:
    """The exact rational value of a symbol-free tree, or ``None``."""
    try:
        v = _exact(node)
    except (ZeroDivisionError, OverflowError, ValueError):
        return None
    return v


def _big(v: Fraction) -> bool:
    return v.numerator.bit_length() > MAX_BITS or v.denominator.bit_length() > MAX_BITS


def _exact(node) -> Fraction | None:  # noqa: C901 (a flat dispatch)
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "neg":
        v = _exact(node[1])
        return None if v is None else -v
    if kind in ("add", "mul"):
        acc = Fraction(0 if kind == "add" else 1)
        for child in node[1]:
            v = _exact(child)
            if v is None:
                return None
            acc = acc + v if kind == "add" else acc * v
            if _big(acc):
                return None
        return acc
    if kind == "inv":
        v = _exact(node[1])
        return None if v is None else 1 / v
    if kind == "pow":
        return _exact_pow(_exact(node[1]), _exact(node[2]))
    if kind == "root":
        n = _exact(node[1])
        return None if n is None or n == 0 else _exact_pow(_exact(node[2]), 1 / n)
    if kind == "abs":
        v = _exact(node[1])
        return None if v is None else abs(v)
    if kind == "fact":
        v = _exact(node[1])
        if v is None or v.denominator != 1 or not 0 <= v <= 2000:
            return None
        return Fraction(math.factorial(int(v)))
    if kind == "binom":
        n, k = _exact(node[1]), _exact(node[2])
        if n is None or k is None or n.denominator != 1 or k.denominator != 1 or not 0 <= n <= 5000:
            return None
        return Fraction(math.comb(int(n), int(k))) if k >= 0 else Fraction(0)
    return None  # constants, symbols, functions, structures


def _exact_pow(b: Fraction | None, e: Fraction | None) -> Fraction | None:
    if b is None or e is None:
        return None
    if e.denominator != 1:  # a rational power: exact only for perfect roots
        q = e.denominator
        if q > 64 or b < 0:
            return None
        rn, rd = _iroot(b.numerator, q), _iroot(b.denominator, q)
        if rn is None or rd is None:
            return None
        b, e = Fraction(rn, rd), Fraction(e.numerator)
    if b in (0, 1):
        if b == 0 and e < 0:
            raise ZeroDivisionError
        return b
    if b == -1:
        return Fraction(-1 if e.numerator % 2 else 1)
    size = max(b.numerator.bit_length(), b.denominator.bit_length())
    if size * abs(e.numerator) > MAX_BITS:
        return None
    return b ** int(e)


def _iroot(n: int, q: int) -> int | None:
    """The exact integer ``q``-th root of ``n >= 0``, or ``None``."""
    if n < 2:
        return n
    if n.bit_length() > MAX_BITS:
        return None
    r = round(n ** (1.0 / q)) if n.bit_length() < 1000 else None
    if r is None:
        return None
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**q == n:
            return c
    return None


# ----------------------------------------------------------------------------- floats

_FUNCS = {
    "sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "arcsin": cmath.asin,
    "arccos": cmath.acos, "arctan": cmath.atan, "sinh": cmath.sinh, "cosh": cmath.cosh,
    "tanh": cmath.tanh, "exp": cmath.exp,
    "cot": lambda z: 1 / cmath.tan(z), "sec": lambda z: 1 / cmath.cos(z),
    "csc": lambda z: 1 / cmath.sin(z),
}  # fmt: skip
_CONSTS = {"pi": complex(math.pi), "e": complex(math.e), "i": 1j}


def evalf(node, env: dict[str, complex]) -> complex:
    """The value of a tree at the point ``env``; raises :class:`EvalError`."""
    try:
        z = _evalf(node, env)
    except (ZeroDivisionError, OverflowError, ValueError) as e:
        raise EvalError(str(e)) from None
    if not (math.isfinite(z.real) and math.isfinite(z.imag)):
        raise EvalError("not finite")
    return z


def _evalf(node, env) -> complex:  # noqa: C901 (a flat dispatch)
    kind = node[0]
    if kind == "num":
        return complex(float(node[1]))
    if kind == "sym":
        return env[node[1]]
    if kind == "const":
        if node[1] == "inf":
            raise ValueError("infinity in arithmetic")
        return _CONSTS[node[1]]
    if kind == "neg":
        return -_evalf(node[1], env)
    if kind == "add":
        return sum((_evalf(c, env) for c in node[1]), 0j)
    if kind == "mul":
        acc = 1 + 0j
        for c in node[1]:
            acc *= _evalf(c, env)
        return acc
    if kind == "inv":
        return 1 / _evalf(node[1], env)
    if kind == "pow":
        return _pow(_evalf(node[1], env), _evalf(node[2], env))
    if kind == "root":
        n, x = _evalf(node[1], env), _evalf(node[2], env)
        if n.imag == 0 and n.real % 2 == 1 and x.imag == 0 and x.real < 0:
            return -complex((-x.real) ** (1 / n.real))  # the real odd root
        return _pow(x, 1 / n)
    if kind == "fn":
        return _FUNCS[node[1]](_evalf(node[2], env))
    if kind == "log":
        x = cmath.log(_evalf(node[2], env))
        return x if node[1] is None else x / cmath.log(_evalf(node[1], env))
    if kind == "abs":
        return complex(abs(_evalf(node[1], env)))
    if kind == "fact":
        x = _evalf(node[1], env)
        if x.imag != 0 or x.real > 170:
            raise ValueError("factorial")
        return complex(math.gamma(x.real + 1))
    if kind == "binom":
        n, k = _evalf(node[1], env), _evalf(node[2], env)
        if n.imag or k.imag or n.real > 170:
            raise ValueError("binom")
        return complex(math.gamma(n.real + 1) / (math.gamma(k.real + 1) * math.gamma(n.real - k.real + 1)))
    raise ValueError(f"{kind} in arithmetic")


def _pow(b: complex, e: complex) -> complex:
    if e.imag == 0 and e.real == int(e.real) and abs(e.real) <= 64:
        return b ** int(e.real)  # integer powers stay real for negative bases
    if b == 0:
        if e.real > 0:
            return 0j
        raise ZeroDivisionError("0 to a non-positive power")
    return b**e


@lru_cache(maxsize=4096)
def _point_values(name: str) -> tuple[float, ...]:
    rng = random.Random(name)
    vals = []
    for _ in range(N_POINTS):
        v = rng.uniform(0.4, 2.6)
        vals.append(v if rng.random() < 0.6 else -v)
    return tuple(vals)


def symbols(node, acc: set[str] | None = None) -> set[str]:
    """The variable names in a tree."""
    acc = set() if acc is None else acc
    if node[0] == "sym":
        acc.add(node[1])
    elif node[0] in ("add", "mul", "list", "set", "union"):
        for c in node[1]:
            symbols(c, acc)
    elif node[0] == "tuple":
        for c in node[3]:
            symbols(c, acc)
    elif node[0] == "rel":
        for c in node[2]:
            symbols(c, acc)
    elif node[0] == "matrix":
        for row in node[1]:
            for c in row:
                symbols(c, acc)
    elif node[0] not in ("num", "const"):
        for c in node[1:]:
            if isinstance(c, tuple):
                symbols(c, acc)
    return acc


def _samples(a, b) -> list[tuple[complex, complex] | None]:
    """``(a(p), b(p))`` at each shared point ``p`` (``None`` where either side has no value)."""
    names = sorted(symbols(a) | symbols(b))
    n = N_POINTS if names else 1
    out = []
    for k in range(n):
        env = {name: complex(_point_values(name)[k]) for name in names}
        try:
            out.append((evalf(a, env), evalf(b, env)))
        except EvalError:
            out.append(None)
    return out


def _close(x: complex, y: complex) -> bool:
    return abs(x - y) <= REL_TOL * max(abs(x), abs(y)) + 1e-12


# ----------------------------------------------------------------------------- comparison

_STRUCTS = ("list", "set", "tuple", "union", "matrix", "rel")
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">="}


def values_equal(a, b) -> bool:
    """Whether two parsed answers are the same mathematical object (policy in :mod:`rewards.math`)."""
    a, b = expand_pm(a), expand_pm(b)
    ka, kb = a[0], b[0]
    if ka == "rel" and kb == "rel":
        return _rel_equal(a, b)
    if ka == "rel" or kb == "rel":
        rel, other = (a, b) if ka == "rel" else (b, a)
        value = assigned_value(rel)
        return value is not None and values_equal(value, other)
    if ka in ("list", "set") or kb in ("list", "set"):
        if ka in ("tuple", "matrix", "union") or kb in ("tuple", "matrix", "union"):
            return False
        return _unordered_equal(_items(a), _items(b))
    if ka == "union" or kb == "union":
        return _unordered_equal(_items(a), _items(b))
    if ka == "tuple" and kb == "tuple":
        return (
            a[1:3] == b[1:3]
            and len(a[3]) == len(b[3])
            and all(values_equal(x, y) for x, y in zip(a[3], b[3]))
        )
    if ka == "matrix" and kb == "matrix":
        ra, rb = a[1], b[1]
        return (
            len(ra) == len(rb)
            and all(len(x) == len(y) for x, y in zip(ra, rb))
            and all(expr_equal(x, y) for rx, ry in zip(ra, rb) for x, y in zip(rx, ry))
        )
    if ka in _STRUCTS or kb in _STRUCTS:
        return False
    return expr_equal(a, b)


def _items(node) -> list:
    return node[1] if node[0] in ("list", "set", "union") else [node]


def _unordered_equal(xs: list, ys: list) -> bool:
    if len(xs) > MAX_ITEMS or len(ys) > MAX_ITEMS:
        return False
    return all(any(values_equal(x, y) for y in ys) for x in xs) and all(
        any(values_equal(x, y) for x in xs) for y in ys
    )


def assigned_value(rel):
    """``x = 3`` -> ``3``: the right side of a single ``=`` whose left side is one variable."""
    ops, sides = rel[1], rel[2]
    if ops == ["="] and sides[0][0] == "sym" and sides[1][0] != "sym":
        return sides[1]
    return None


def _rel_equal(a, b) -> bool:
    ops_a, sa = a[1], a[2]
    ops_b, sb = b[1], b[2]
    if len(ops_a) == 1 and len(ops_b) == 1:
        (oa,), (ob,) = ops_a, ops_b
        if oa in (">", ">="):
            oa, sa = _FLIP[oa], sa[::-1]
        if ob in (">", ">="):
            ob, sb = _FLIP[ob], sb[::-1]
        if oa != ob:
            return False
        return _proportional(("add", [sa[0], ("neg", sa[1])]), ("add", [sb[0], ("neg", sb[1])]), oa)
    if ops_b != ops_a:
        ops_b, sb = [_FLIP.get(o, o) for o in ops_b[::-1]], sb[::-1]
    return ops_a == ops_b and all(expr_equal(x, y) for x, y in zip(sa, sb))


def _proportional(d1, d2, op: str) -> bool:
    """``d1 = c * d2`` for a constant ``c`` (nonzero; positive for inequalities)."""
    samples = _samples(d1, d2)
    valid = [s for s in samples if s is not None]
    if len(valid) < min(2, len(samples)):
        return False
    ratio = None
    for x, y in valid:
        zx, zy = abs(x) < 1e-12, abs(y) < 1e-12
        if zx and zy:
            continue
        if zx or zy:
            return False
        r = x / y
        if ratio is None:
            ratio = r
        elif not _close(r, ratio):
            return False
    if ratio is not None and op != "=" and op != "!=":
        return abs(ratio.imag) < 1e-9 and ratio.real > 0
    return True


def _inf_sign(node) -> int:
    if node == ("const", "inf"):
        return 1
    if node[0] == "neg":
        return -_inf_sign(node[1])
    return 0


def expr_equal(a, b) -> bool:
    """Whether two expression trees agree: exactly when both are rational constants, else at
    :data:`N_POINTS` points to a relative :data:`REL_TOL`."""
    if a[0] in _STRUCTS or b[0] in _STRUCTS:
        return values_equal(a, b)
    sa, sb = _inf_sign(a), _inf_sign(b)
    if sa or sb:
        return sa == sb
    if a == b:
        return True
    free = symbols(a) | symbols(b)
    if not free:
        ea, eb = exact(a), exact(b)
        if ea is not None and eb is not None:
            return ea == eb
    samples = _samples(a, b)
    valid = [s for s in samples if s is not None]
    if len(valid) < min(2, len(samples)):
        return False
    return all(_close(x, y) for x, y in valid)


def _has_pm(node) -> bool:
    if node[0] == "pm":
        return True
    for c in node[1:]:
        if isinstance(c, tuple) and c and isinstance(c[0], str) and _has_pm(c):
            return True
        if isinstance(c, list) and any(isinstance(x, tuple) and _has_pm(x) for x in c):
            return True
    return False


def _sub_pm(node, sign: int):
    """Replace the first ``("pm", t)`` by ``t`` (sign 1) or ``-t``; ``(new_node, replaced)``."""
    if node[0] == "pm":
        return (node[1] if sign > 0 else ("neg", node[1])), True
    out, done = [node[0]], False
    for c in node[1:]:
        if not done and isinstance(c, tuple) and c and isinstance(c[0], str):
            c, done = _sub_pm(c, sign)
        elif not done and isinstance(c, list):
            new = []
            for x in c:
                if not done and isinstance(x, tuple):
                    x, done = _sub_pm(x, sign)
                new.append(x)
            c = new
        out.append(c)
    return tuple(out), done


def expand_pm(node):
    """``1 \\pm \\sqrt2`` -> the list ``1 + \\sqrt2, 1 - \\sqrt2`` (at most 8 branches)."""
    if node[0] in ("list", "set"):
        if not any(_has_pm(x) for x in node[1]):
            return node
        items = []
        for x in node[1]:
            e = expand_pm(x)
            items.extend(e[1] if e[0] == "list" and _has_pm(x) else [e])
        return (node[0], items)
    if node[0] in ("rel", "tuple", "union", "matrix") or not _has_pm(node):
        return node
    todo, done = [node], []
    while todo and len(done) + len(todo) <= 8:
        cur = todo.pop()
        if not _has_pm(cur):
            done.append(cur)
            continue
        todo.append(_sub_pm(cur, 1)[0])
        todo.append(_sub_pm(cur, -1)[0])
    if todo:
        return node
    return ("list", done)
