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
        b, e = _evalf(node[1], env), _evalf(node[2], env)
        if b.imag == 0 and b.real < 0 and e.imag == 0 and e.real != int(e.real):
            q = _odd_denominator(node[2])  # x^{2/3} at x < 0: the real branch, as \\sqrt[3]{x}^2
            if q:
                return complex((-1) ** q * (-b.real) ** e.real)
        return _pow(b, e)
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


def _odd_denominator(node) -> int:
    """For an exponent ``p/q`` with ``q`` odd: ``p % 2 + 2`` (the sign power), else 0."""
    v = exact(node) if not symbols(node) else None
    if v is None or v.denominator % 2 == 0:
        return 0
    return 1 if v.numerator % 2 else 2


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
    elif node[0] in ("add", "mul", "list", "set", "union", "ratio"):
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


def _close(x: complex, y: complex, rel: float = REL_TOL) -> bool:
    return abs(x - y) <= rel * max(abs(x), abs(y)) + 1e-12


# ----------------------------------------------------------------------------- comparison

_STRUCTS = ("list", "set", "tuple", "union", "matrix", "rel", "ratio")
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">="}


def values_equal(a, b, tol: float | None = None) -> bool:  # noqa: C901 (one branch per kind pair)
    """Whether two parsed answers are the same mathematical object (policy in :mod:`rewards.math`);
    ``tol``, when set, is the relative tolerance for numeric constants (else they compare exactly)."""
    a, b = expand_pm(a), expand_pm(b)
    ka, kb = a[0], b[0]
    if _is_inequality(a) or _is_inequality(b):  # sets of reals: -2 <= x <= 7 == [-2, 7]
        sa, sb = real_set(a), real_set(b)
        if sa is not None and sb is not None and (ka != "rel" or kb != "rel"):
            return _real_sets_equal(sa, sb, tol)
    if ka == "rel" and kb == "rel":
        return _rel_equal(a, b, tol)
    if ka == "rel" or kb == "rel":
        rel, other = (a, b) if ka == "rel" else (b, a)
        value = assigned_value(rel)
        return value is not None and values_equal(value, other, tol)
    if ka in ("list", "set") or kb in ("list", "set"):
        if ka in ("tuple", "matrix", "union", "ratio") or kb in ("tuple", "matrix", "union", "ratio"):
            return False
        return _unordered_equal(_items(a), _items(b), tol)
    if ka == "union" or kb == "union":
        return _unordered_equal(_items(a), _items(b), tol)
    if ka == "tuple" and kb == "tuple":
        return a[1:3] == b[1:3] and _pairwise(a[3], b[3], tol)
    if ka == "ratio" and kb == "ratio":
        return _pairwise(a[1], b[1], tol)
    if ka == "matrix" and kb == "matrix":
        ra, rb = a[1], b[1]
        return len(ra) == len(rb) and all(len(x) == len(y) and _pairwise(x, y, tol) for x, y in zip(ra, rb))
    if ka in _STRUCTS or kb in _STRUCTS:
        return False
    return expr_equal(a, b, tol)


def _pairwise(xs: list, ys: list, tol) -> bool:
    return len(xs) == len(ys) and all(values_equal(x, y, tol) for x, y in zip(xs, ys))


def _items(node) -> list:
    return node[1] if node[0] in ("list", "set", "union") else [node]


def _unordered_equal(xs: list, ys: list, tol=None) -> bool:
    if len(xs) > MAX_ITEMS or len(ys) > MAX_ITEMS:
        return False
    return all(any(values_equal(x, y, tol) for y in ys) for x in xs) and all(
        any(values_equal(x, y, tol) for x in xs) for y in ys
    )


def is_name(node) -> bool:
    """A name, not a value: symbols joined by products, quotients, ``|.|``, ``:`` or a tuple
    (``x``, ``AB``, ``\\frac{NO}{BO}``, ``|AB|``, ``(p, q)``, ``V_1 : V_2``, ``f(x)``)."""
    kind = node[0]
    if kind == "sym":
        return True
    if kind in ("mul", "ratio"):
        return all(is_name(c) for c in node[1])
    if kind in ("inv", "abs"):
        return is_name(node[1])
    if kind == "tuple":
        return node[1:3] == ("(", ")") and all(is_name(c) for c in node[3])
    return False


def assigned_value(rel):
    """The value an ``=`` answer gives: ``x = 3`` -> ``3``, ``(p,q) = (3,2)`` -> ``(3,2)``; the last
    member of a chain whose other members are names or constants (``x = 2+3 = 5`` -> ``5``)."""
    ops, sides = rel[1], rel[2]
    if any(op != "=" for op in ops) or is_name(sides[-1]):
        return None
    first, middle, last = sides[0], sides[1:-1], sides[-1]
    if not all(not symbols(m) or is_name(m) for m in middle):
        return None
    if is_name(first) or (not symbols(first) and not symbols(last)):  # x = 3; 2 + 3 = 5
        return last
    return None


def _reduce_chain(rel):
    """``x = 5+5+1 = 11`` -> ``x = 11``: a chain of ``=`` from a name compares as its last member."""
    ops, sides = rel[1], rel[2]
    if len(ops) > 1 and all(op == "=" for op in ops) and is_name(sides[0]):
        return ("rel", ["="], [sides[0], sides[-1]])
    return rel


def _rel_equal(a, b, tol=None) -> bool:
    a, b = _reduce_chain(a), _reduce_chain(b)
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
        if oa == "=" and all(is_name(x) for x in (sa[0], sb[0])) and symbols(sa[0]) == symbols(sb[0]):
            return values_equal(sa[0], sb[0]) and values_equal(sa[1], sb[1], tol)  # (x,y) = (1,2)
        return _proportional(("add", [sa[0], ("neg", sa[1])]), ("add", [sb[0], ("neg", sb[1])]), oa)
    if ops_b != ops_a:
        ops_b, sb = [_FLIP.get(o, o) for o in ops_b[::-1]], sb[::-1]
    return ops_a == ops_b and all(expr_equal(x, y, tol) for x, y in zip(sa, sb))


def _proportional(d1, d2, op: str) -> bool:
    """``d1 = c * d2`` for a constant ``c`` (nonzero; positive for inequalities)."""
    if d1[0] in _STRUCTS or d2[0] in _STRUCTS or any(x[0] in _STRUCTS for d in (d1, d2) for x in d[1]):
        return False
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


# ----------------------------------------------------------------------------- sets of reals

_NEG_INF = ("neg", ("const", "inf"))


def _is_inequality(node) -> bool:
    return node[0] == "rel" and all(op in _FLIP for op in node[1])


def real_set(node):
    """A set of reals as ``[(lo, lo_closed, hi, hi_closed), ...]``, or ``None``: an interval, a
    union of intervals, or an inequality in one variable (``-2 <= x <= 7``, ``x > 2``,
    ``1 <= |z| <= 3/2``)."""
    kind = node[0]
    if kind == "tuple" and len(node[3]) == 2:
        return [(node[3][0], node[1] == "[", node[3][1], node[2] == "]")]
    if kind == "union":
        parts = [real_set(x) for x in node[1]]
        return None if any(p is None for p in parts) else [iv for p in parts for iv in p]
    if not _is_inequality(node) or len(node[1]) > 2:
        return None
    ops, sides = list(node[1]), list(node[2])
    if ops[0] in (">", ">="):
        ops, sides = [_FLIP[o] for o in ops[::-1]], sides[::-1]
    if any(o in (">", ">=") for o in ops):
        return None
    if len(ops) == 2:
        lo, var, hi = sides
        return _bounded(var, lo, ops[0] == "<=", hi, ops[1] == "<=")
    left, right = sides
    if _variable(left) and not symbols(right):
        return _bounded(left, _NEG_INF, False, right, ops[0] == "<=")
    if _variable(right) and not symbols(left):
        return _bounded(right, left, ops[0] == "<=", ("const", "inf"), False)
    return None


def _variable(node) -> bool:
    return (is_name(node) and node[0] != "tuple") or (node[0] == "abs" and is_name(node[1]))


def _bounded(var, lo, lo_closed, hi, hi_closed):
    if not _variable(var) or symbols(lo) or symbols(hi):
        return None
    if var[0] != "abs":
        return [(lo, lo_closed, hi, hi_closed)]
    lo_v = _real(lo)  # a <= |x| <= b: [-b, -a] U [a, b] for a > 0, [-b, b] for a <= 0
    if lo_v is None:
        return None
    if lo_v <= 0:
        return [(("neg", hi), hi_closed, hi, hi_closed)]
    return [(("neg", hi), hi_closed, ("neg", lo), lo_closed), (lo, lo_closed, hi, hi_closed)]


def _real(node) -> float | None:
    if _inf_sign(node):
        return float(_inf_sign(node)) * math.inf
    try:
        z = evalf(node, {})
    except (EvalError, KeyError):
        return None
    return z.real if abs(z.imag) < 1e-12 else None


def _real_sets_equal(a: list, b: list, tol) -> bool:
    if len(a) != len(b) or len(a) > MAX_ITEMS:
        return False
    key = [(_real(iv[0]), _real(iv[2])) for iv in a + b]
    if any(k[0] is None or k[1] is None for k in key):
        return False
    order_a = sorted(range(len(a)), key=lambda i: key[i])
    order_b = sorted(range(len(b)), key=lambda i: key[len(a) + i])
    return all(
        a[i][1] == b[j][1] and a[i][3] == b[j][3] and expr_equal(a[i][0], b[j][0], tol)
        and expr_equal(a[i][2], b[j][2], tol)
        for i, j in zip(order_a, order_b)
    )  # fmt: skip


def _inf_sign(node) -> int:
    if node == ("const", "inf"):
        return 1
    if node[0] == "neg":
        return -_inf_sign(node[1])
    return 0


def expr_equal(a, b, tol: float | None = None) -> bool:
    """Whether two expression trees agree: exactly when both are rational constants (to a relative
    ``tol`` when it is set), else at :data:`N_POINTS` points to a relative :data:`REL_TOL`."""
    if a[0] in _STRUCTS or b[0] in _STRUCTS:
        return values_equal(a, b, tol)
    sa, sb = _inf_sign(a), _inf_sign(b)
    if sa or sb:
        return sa == sb
    if a == b:
        return True
    free = symbols(a) | symbols(b)
    if not free:
        ea, eb = exact(a), exact(b)
        if ea is not None and eb is not None:
            return ea == eb or (tol is not None and abs(ea - eb) <= tol * max(abs(ea), abs(eb)))
    samples = _samples(a, b)
    valid = [s for s in samples if s is not None]
    if len(valid) < min(2, len(samples)):
        return False
    rel = max(REL_TOL, tol) if tol is not None and not free else REL_TOL
    return all(_close(x, y, rel) for x, y in valid)


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
