"""Write ``benchmarks/data/math_mix.jsonl``: a seeded mix of R1-style completions with their gold
answers and the right verdict, for ``bench_math_verify.py``.

Each row is ``{"completion", "answer", "category", "expected"}``. ``expected`` is true by
construction: a correct row's final answer is the gold rewritten by a known identity (``0.5`` for
``\\frac12``, ``(x+1)^2`` for ``x^2+2x+1``, ``\\{b, a\\}`` for ``\\{a, b\\}``); an incorrect row's
answer is a different value (off by one, a swapped tuple, an open end made closed). Only cases
whose verdict a maths grader would not dispute are generated (no decimal approximations of
irrationals counted as correct, no unit conversions).

Usage::

    python benchmarks/make_math_data.py [--rows-per-category 96] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Callable

DEFAULT_OUT = Path(__file__).parent / "data" / "math_mix.jsonl"
Case = tuple[str, str, bool]  # (gold, final answer written by the "model", expected)


# ----------------------------------------------------------------------------- categories


def _integer(r: random.Random) -> Case:
    n = r.randint(-500, 5000)
    return (str(n), str(n), True) if r.random() < 0.5 else (str(n), str(n + r.choice([-2, -1, 1, 10])), False)


def _decimal(r: random.Random) -> Case:
    v = r.randint(1, 9999) / 100
    gold = f"{v:.2f}".rstrip("0").rstrip(".")
    if r.random() < 0.5:
        return gold, r.choice([f"{v:.2f}", f"{v:.3f}", gold]), True
    return gold, f"{v + r.choice([0.1, 0.01, 1]):.2f}", False


def _fraction(r: random.Random) -> Case:
    q = r.choice([2, 4, 5, 8, 3, 6, 7, 9, 11, 12])
    p = r.choice([k for k in range(1, 3 * q) if math.gcd(k, q) == 1])
    gold = rf"\frac{{{p}}}{{{q}}}"
    if r.random() < 0.5:
        forms = [f"{p}/{q}", rf"\dfrac{{{p}}}{{{q}}}", rf"\frac{{{2 * p}}}{{{2 * q}}}", rf"\tfrac{{{p}}}{{{q}}}"]
        if q in (2, 4, 5, 8):
            forms.append(str(p / q))
        return gold, r.choice(forms), True
    return gold, r.choice([rf"\frac{{{q}}}{{{p}}}" if p != q else "0", rf"\frac{{{p + 1}}}{{{q}}}", f"{p}/{q + 1}"]), False


def _thousands(r: random.Random) -> Case:
    n = r.randint(1000, 9_999_999)
    gold = str(n)
    seps = [f"{n:,}", f"{n:,}".replace(",", "{,}"), f"{n:,}".replace(",", r"\,")]
    if r.random() < 0.5:
        return gold, r.choice(seps), True
    return gold, f"{n + r.choice([1, 100, 1000]):,}", False


def _percent(r: random.Random) -> Case:
    p = r.randint(1, 99)
    gold = rf"{p}\%"
    if r.random() < 0.5:
        return gold, r.choice([str(p), rf"{p}\%", f"{p}%"]), True
    return gold, r.choice([str(p + 5), rf"{p + 1}\%"]), False


def _units(r: random.Random) -> Case:
    n = r.randint(2, 400)
    unit = r.choice([r"\text{ cm}", r"\text{ meters}", " dollars", r"\text{ cm}^2", " apples", r"\mbox{ km}"])
    if r.random() < 0.5:
        return str(n), f"{n}{unit}", True
    return str(n), f"{n + r.choice([1, 2, 10])}{unit}", False


def _currency(r: random.Random) -> Case:
    cents = r.choice([0, 50, 25, 75])
    n = r.randint(1, 3000)
    gold = f"{n}.{cents:02d}" if cents else str(n)
    if r.random() < 0.5:
        return gold, r.choice([rf"\${n:,}.{cents:02d}", rf"\${gold}", f"{gold} dollars"]), True
    return gold, rf"\${n + 1}.{cents:02d}", False


def _degrees(r: random.Random) -> Case:
    n = r.choice(range(5, 360, 5))
    gold = rf"{n}^\circ"
    if r.random() < 0.5:
        return gold, r.choice([str(n), f"{n}°", rf"{n}^{{\circ}}", rf"{n}^\circ"]), True
    return gold, r.choice([str(n + 10), rf"{n + 5}^\circ"]), False


def _scientific(r: random.Random) -> Case:
    a, b, k = r.randint(1, 9), r.randint(1, 9), r.randint(3, 8)
    gold = str((10 * a + b) * 10 ** (k - 1))
    forms = [rf"{a}.{b}\times10^{{{k}}}", rf"{a}.{b} \times 10^{k}", f"{a}.{b}e{k}", rf"{a}.{b}\cdot 10^{{{k}}}"]
    if r.random() < 0.5:
        return gold, r.choice(forms), True
    return gold, rf"{a}.{b}\times10^{{{k + 1}}}", False


def _radicals(r: random.Random) -> Case:
    k, m = r.randint(2, 9), r.choice([2, 3, 5, 6, 7, 10, 11])
    gold = rf"{k}\sqrt{{{m}}}"
    if r.random() < 0.2:
        n = r.randint(2, 6)
        return (str(n), rf"\sqrt[3]{{{n**3}}}", True) if r.random() < 0.5 else (str(n), rf"\sqrt[3]{{{n**3 + 1}}}", False)
    if r.random() < 0.5:
        return gold, r.choice([rf"\sqrt{{{k * k * m}}}", rf"{k}\sqrt{m}" if m < 10 else rf"{k}\sqrt{{{m}}}", rf"\sqrt{{{m}}}\cdot {k}"]), True
    return gold, r.choice([rf"\sqrt{{{k * m}}}", rf"{k + 1}\sqrt{{{m}}}", rf"{k}\sqrt{{{m + 1}}}"]), False


def _pi(r: random.Random) -> Case:
    a, b = r.randint(1, 9), r.choice([2, 3, 4, 6])
    gold = rf"\frac{{{a}\pi}}{{{b}}}"
    if r.random() < 0.5:
        return gold, r.choice([rf"\frac{{{a}}}{{{b}}}\pi", rf"{a}\pi/{b}", rf"\pi\cdot\frac{{{a}}}{{{b}}}"]), True
    return gold, r.choice([rf"\frac{{{a}\pi}}{{{b + 1}}}", f"{a * math.pi / b:.2f}"]), False


def _assignment(r: random.Random) -> Case:
    n, v = r.randint(-20, 50), r.choice("xyatk")
    if r.random() < 0.5:
        return (str(n), f"{v} = {n}", True) if r.random() < 0.7 else (f"{v}={n}", str(n), True)
    return str(n), f"{v} = {n + 1}", False


def _equation(r: random.Random) -> Case:
    a, b = r.randint(2, 9), r.randint(-9, 9)
    gold = f"y = {a}x {'+' if b >= 0 else '-'} {abs(b)}"
    if r.random() < 0.5:
        return gold, r.choice([f"{a}x + {b} = y".replace("+ -", "- "), f"y={a}x+{b}".replace("+-", "-"), f"2y = {2 * a}x + {2 * b}".replace("+ -", "- ")]), True
    return gold, f"y = {a}x + {b + 1}".replace("+ -", "- "), False


def _interval(r: random.Random) -> Case:
    a = r.randint(-9, 5)
    b = a + r.randint(1, 9)
    lo, hi = r.choice("[("), r.choice(")]")
    if r.random() < 0.25:  # a union with infinite rays
        gold = rf"(-\infty, {a}) \cup ({b}, \infty)"
        if r.random() < 0.5:
            return gold, rf"({b},\infty)\cup(-\infty,{a})", True
        return gold, rf"(-\infty, {a}] \cup ({b}, \infty)", False
    gold = f"{lo}{a}, {b}{hi}"
    if r.random() < 0.5:
        return gold, r.choice([rf"\left{lo}{a},{b}\right{hi}", f"{lo}{a},{b}{hi}"]), True
    flip = {"[": "(", "(": "["}[lo] + f"{a}, {b}{hi}"
    return gold, r.choice([flip, f"{lo}{a}, {b + 1}{hi}"]), False


def _set(r: random.Random) -> Case:
    xs = r.sample(range(-9, 15), r.randint(2, 4))
    gold = r"\{" + ", ".join(map(str, xs)) + r"\}"
    ys = xs[::-1]
    if r.random() < 0.5:
        return gold, r.choice([r"\{" + ",".join(map(str, ys)) + r"\}", ", ".join(map(str, ys))]), True
    bad = ys[:-1] + [ys[-1] + 1]
    return gold, r.choice([r"\{" + ",".join(map(str, bad)) + r"\}", "(" + ", ".join(map(str, xs)) + ")"]), False


def _tuple(r: random.Random) -> Case:
    a, b = r.sample(range(-9, 15), 2)
    gold = f"({a}, {b})"
    if r.random() < 0.5:
        return gold, r.choice([f"({a},{b})", rf"\left({a}, {b}\right)"]), True
    return gold, r.choice([f"({b}, {a})", r"\{" + f"{a}, {b}" + r"\}"]), False


def _matrix(r: random.Random) -> Case:
    m = [r.randint(-5, 9) for _ in range(4)]
    gold = r"\begin{pmatrix} %d & %d \\ %d & %d \end{pmatrix}" % tuple(m)
    if r.random() < 0.5:
        return gold, r"\begin{bmatrix}%d&%d\\%d&%d\end{bmatrix}" % tuple(m), True
    t = (m[0], m[2], m[1], m[3]) if m[1] != m[2] else (m[0], m[1], m[2], m[3] + 1)
    return gold, r"\begin{pmatrix}%d&%d\\%d&%d\end{pmatrix}" % t, False


def _poly(r: random.Random) -> Case:
    a, b = r.randint(1, 6), r.randint(1, 6)
    gold = f"(x+{a})(x+{b})"
    expanded = f"x^2 + {a + b}x + {a * b}"
    if r.random() < 0.2:  # a rational expression
        return (rf"\frac{{1}}{{x+{a}}}", rf"\frac{{x+{b}}}{{(x+{a})(x+{b})}}", True) if r.random() < 0.5 else (
            rf"\frac{{1}}{{x+{a}}}", rf"\frac{{1}}{{x+{a + 1}}}", False)
    if r.random() < 0.5:
        return gold, r.choice([expanded, f"(x+{b})(x+{a})", f"x^2+{a * b}+{a + b}x"]), True
    return gold, r.choice([f"x^2 + {a + b}x + {a * b + 1}", f"(x-{a})(x+{b})"]), False


def _complex(r: random.Random) -> Case:
    a, b = r.randint(1, 9), r.randint(1, 9)
    gold = f"{a}+{b}i"
    if r.random() < 0.5:
        return gold, r.choice([f"{b}i+{a}", f"{a} + {b}i", f"{a}+i\\cdot {b}"]), True
    return gold, r.choice([f"{a}-{b}i", f"{b}+{a}i" if a != b else f"{a}+{b + 1}i"]), False


def _log(r: random.Random) -> Case:
    base, k = r.choice([2, 3, 5, 10]), r.randint(2, 5)
    if r.random() < 0.5:
        return str(k), rf"\log_{{{base}}} {base**k}", True
    return str(k), rf"\log_{{{base}}} {base ** (k + 1)}", False


def _choice(r: random.Random) -> Case:
    g = r.choice("ABCDE")
    if r.random() < 0.5:
        return g, r.choice([f"({g})", rf"\text{{{g}}}", g, rf"\textbf{{({g})}}"]), True
    return g, r.choice([c for c in "ABCDE" if c != g]), False


_WORDS = ["Monday", "Tuesday", "yes", "no", "red", "blue", "Alice", "Bob", "north", "south"]


def _text(r: random.Random) -> Case:
    w = r.choice(_WORDS)
    if r.random() < 0.5:
        return w, r.choice([w.lower(), w.upper(), rf"\text{{{w}}}"]), True
    return w, r.choice([x for x in _WORDS if x.lower() != w.lower()]), False


def _nested_boxed(r: random.Random) -> Case:
    a, b = r.randint(2, 9), r.randint(2, 9)
    gold = rf"\frac{{\sqrt{{{a}}}}}{{{b}}}"
    if r.random() < 0.5:
        return gold, r.choice([rf"\dfrac{{\sqrt{{{a}}}}}{{{b}}}", rf"\frac{{1}}{{{b}}}\sqrt{{{a}}}"]), True
    return gold, rf"\frac{{\sqrt{{{a + 1}}}}}{{{b}}}", False


CATEGORIES: dict[str, Callable[[random.Random], Case]] = {
    "integer": _integer, "decimal": _decimal, "fraction": _fraction, "thousands": _thousands,
    "percent": _percent, "units": _units, "currency": _currency, "degrees": _degrees,
    "scientific": _scientific, "radical": _radicals, "pi": _pi, "assignment": _assignment,
    "equation": _equation, "interval": _interval, "set": _set, "tuple": _tuple, "matrix": _matrix,
    "polynomial": _poly, "complex": _complex, "logarithm": _log, "multiple_choice": _choice,
    "text": _text, "nested_boxed": _nested_boxed,
}  # fmt: skip


# ----------------------------------------------------------------------------- completions

_REASONING = [
    "Let me set up the problem. We have {n1} and {n2}, so the total is {n3}. Wait, let me re-check "
    "that step: {n1} + {n2} gives {n3}, and dividing by {n4} gives the quantity we need.",
    "First, simplify the expression. Expanding, we get terms like {n1}x and {n2}. Hmm, maybe I "
    "should try a substitution instead. Let u = {n4}; then the equation becomes u^2 = {n3}.",
    "We need to count carefully. There are {n1} ways for the first step and {n2} for the second, "
    "but {n4} of them are repeated, so I subtract them. Let me verify with a small case.",
]


def _wrap(r: random.Random, final: str) -> str:
    nums = {f"n{i}": r.randint(2, 99) for i in range(1, 5)}
    think = r.choice(_REASONING).format(**nums)
    style = r.randrange(5)
    if style == 0:
        return f"<think>\n{think}\n</think>\n<answer>\n{final}\n</answer>"
    if style == 1:
        return f"<think>\n{think}\n</think>\nTherefore, the final answer is $\\boxed{{{final}}}$."
    if style == 2:
        return f"{think}\n\nSo the answer is $\\boxed{{{final}}}$."
    if style == 3:
        return f"<think>{think}</think> <answer>The answer is $\\boxed{{{final}}}$</answer>"
    return f"<think>\n{think} Maybe it is \\boxed{{{nums['n1']}}}? No.\n</think>\n\\[\\boxed{{{final}}}\\]"


def _think_hack(r: random.Random) -> dict:
    """The gold appears only inside the reasoning; the answer after ``</think>`` is wrong or absent."""
    gold, _, _ = CATEGORIES[r.choice(["integer", "fraction", "radical", "set"])](r)
    wrong_gold, _, _ = _integer(r)
    after = r.choice([f"<answer>{wrong_gold}</answer>", "I am not sure.", f"\\boxed{{{wrong_gold}}}"])
    if wrong_gold == gold:
        after = "I am not sure."
    completion = f"<think>\nThe answer is \\boxed{{{gold}}}. <answer>{gold}</answer>\n</think>\n{after}"
    return {"completion": completion, "answer": gold, "category": "think_hack", "expected": False}


def make_rows(rows_per_category: int = 96, seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for name, gen in CATEGORIES.items():
        for _ in range(rows_per_category):
            gold, final, expected = gen(r)
            rows.append({"completion": _wrap(r, final), "answer": gold, "category": name, "expected": expected})
    rows.extend(_think_hack(r) for _ in range(rows_per_category))
    r.shuffle(rows)
    return rows


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows-per-category", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    rows = make_rows(args.rows_per_category, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} rows ({len(CATEGORIES) + 1} categories) to {args.out}")
    return args.out


if __name__ == "__main__":
    main()
