"""Extract labelled (gold, prediction, verdict) cases from Math-Verify's and TRL's test files.

Reads the test sources with :mod:`ast` (nothing is imported or executed) and writes one JSON
object per case to ``benchmarks/math_verify_cases.jsonl``; ``bench_math_suite.py`` runs them.

Sources (both Apache-2.0; the data file's first line records them):

- huggingface/Math-Verify: the ``tests/`` of the math-verify 0.9.0 sdist, with
  ``test_all.py::test_trailing_punctuation`` from commit cf14bc47, ``test_mixed_number_extraction.py``
  from 05aa3a67, and ``test_failed_latex_span.py`` and ``test_yujianll.py`` from 056ad625 (later
  than 0.9.0; the later ``test_yujianll.py`` labels ``1 - 1/e`` vs ``1 + 1/e`` 0, 0.9.0's said 1).
- huggingface/trl ``tests/test_rewards.py`` at 010eddf0: ``TestAccuracyReward``,
  ``TestReasoningAccuracyReward`` and ``TestCosineScaledReward``.

How a test becomes cases:

- ``@pytest.mark.parametrize`` rows with ``gold``/``pred``/``expected`` (or ``result``) become one
  case each; the ``compare_strings(...)`` call in the body gives the upstream options
  (``match_types``, ``precision``, ``strict``, ``allow_set_relation_comp``), read from the call or
  the row. ``assert compare_strings(gold, pred, ...) == N`` outside parametrize does too.
- ``test_yujianll.py`` calls ``verify(parse(gold), parse(pred))``: mode ``default``.
- ``test_string_extraction.py``: a row whose expected extraction is ``[x, X]`` becomes
  (gold ``X``, pred, 1); a row expecting no extraction has no gold and is skipped.
- ``test_mixed_number_extraction.py`` / ``test_failed_latex_span.py`` assert on ``parse`` and
  ``verify`` results; a small symbolic walk of each test body (assignments, ``for`` loops over
  literals, ``parse``/``verify``/``sympy.Rational``) turns each assertion that compares a
  prediction with a value into a case: ``simplify(parsed[0] - V) == 0`` and ``verify(V, P) is True``
  give (V, P, 1); ``verify(...) is False`` gives 0; ``parse(A)[0] == parse(B)[0]`` gives (B, A, 1).
  Assertions on the fallback string, on ``first_match`` mode, or on types carry no label: skipped.
- TRL: ``completion(s)`` and ``solution(s)`` lists in each test body, then ``rewards[i] == v``,
  ``rewards[i] is None`` or ``rewards == [approx(v), ...]`` (the cosine reward: its sign is the
  verdict). A call with ``reasoning_delimiters=`` other than ``</think>`` is marked ``option``.

Usage::

    python benchmarks/extract_math_verify_cases.py --math-verify DIR --trl DIR [-o OUT]

where ``DIR/tests/*.py`` are the upstream files.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
from fractions import Fraction
from pathlib import Path

MV_FILES = [
    "test_all.py", "test_numina_cases.py", "test_open_thoughts.py", "test_yujianll.py",
    "test_mixed_number_extraction.py", "test_boxed.py", "test_strict.py",
    "test_failed_latex_span.py", "test_string_extraction.py",
]  # fmt: skip
TRL_CLASSES = ("TestAccuracyReward", "TestReasoningAccuracyReward", "TestCosineScaledReward")
SOURCES = {
    "math-verify": "huggingface/Math-Verify tests: math-verify 0.9.0 sdist; test_all.py::test_trailing_punctuation "
    "@cf14bc47e798017458fa7f60138da640065351ce; test_mixed_number_extraction.py "
    "@05aa3a67e1e5aa4a0dbecea17550a17cc2d5ed2d; test_failed_latex_span.py and test_yujianll.py "
    "@056ad6253a41b01e49072623b7e2c88ded7d82af",
    "trl": "huggingface/trl tests/test_rewards.py @010eddf0110ae5461b2102eb0977f83106b4106d",
    "licence": "Apache-2.0 (both projects)",
}
DEFAULTS = {"match_types": ["latex", "expr"], "precision": 6, "strict": True, "allow_set_relation_comp": False}


class Skip(Exception):
    """A node that carries no (gold, prediction) label."""


# ----------------------------------------------------------------------------- literal values


def value(node: ast.AST, env: dict):  # noqa: C901 (a flat dispatch over node kinds)
    """A literal, or one of the symbolic values of a test body (tuples tagged by their first item)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return [value(e, env) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {value(k, env): value(v, env) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise Skip(f"unknown name {node.id}")
    if isinstance(node, ast.JoinedStr):
        return "".join(_fstring_part(p, env) for p in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -value(node.operand, env)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add)):
        left, right = value(node.left, env), value(node.right, env)
        return left * right if isinstance(node.op, ast.Mult) else left + right
    if isinstance(node, ast.Subscript):  # parse(...)[0]: the first parsed value stands for the parse
        parsed = value(node.value, env)
        if isinstance(parsed, tuple) and parsed[0] == "parsed" and value(node.slice, env) == 0:
            return parsed
        raise Skip("subscript")
    if isinstance(node, ast.ListComp):
        return _listcomp(node, env)
    if isinstance(node, ast.Call):
        return _call(node, env)
    raise Skip(f"unsupported {type(node).__name__}")


def _fstring_part(part: ast.AST, env: dict) -> str:
    if isinstance(part, ast.Constant):
        return part.value
    assert isinstance(part, ast.FormattedValue)
    spec = "".join(_fstring_part(p, env) for p in part.format_spec.values) if part.format_spec else ""
    return format(value(part.value, env), spec)


def _listcomp(node: ast.ListComp, env: dict) -> list:
    (gen,) = node.generators
    out = []
    for item in value(gen.iter, env):
        out.append(value(node.elt, {**env, gen.target.id: item}))
    return out


def _name(func: ast.AST) -> str:
    return ast.unparse(func)


def _call(node: ast.Call, env: dict):
    fn = _name(node.func)
    kw = {k.arg: k.value for k in node.keywords}
    if fn == "math.sqrt":
        return math.sqrt(value(node.args[0], env))
    if fn in ("sympy.Rational", "Rational"):
        return ("value", str(Fraction(*(value(a, env) for a in node.args))))
    if fn in ("sympy.Integer", "Integer"):
        return ("value", str(value(node.args[0], env)))
    if fn == "len":
        return len(value(node.args[0], env))
    if fn == "pytest.param":
        return ("param", [value(a, env) for a in node.args], value(kw["id"], env) if "id" in kw else None)
    if fn == "parse":
        mode = "first_match" if "extraction_mode" in kw else None
        config = _name(node.args[1]) if len(node.args) > 1 else "default"
        return ("parsed", value(node.args[0], env), "expr" if config == "EXPR_EXTRACTION" else config, mode)
    if fn == "verify":
        return ("verify", value(node.args[0], env), value(node.args[1], env))
    if fn.endswith("ExtractionConfig"):
        return ("config", ast.unparse(node))
    raise Skip(f"call {fn}")


# ----------------------------------------------------------------------------- parametrized tests


def parametrize_rows(fn: ast.FunctionDef, env: dict) -> list[tuple[dict, str | None]]:
    """``[(row, pytest_id), ...]`` from the function's ``@pytest.mark.parametrize``; ``[({}, None)]``
    when it has none."""
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and _name(dec.func) == "pytest.mark.parametrize":
            names = value(dec.args[0], env)
            names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
            rows = []
            for raw in value(dec.args[1], env):
                pid = None
                if isinstance(raw, tuple) and raw[0] == "param":
                    raw, pid = raw[1], raw[2]
                raw = raw if len(names) > 1 else [raw[0] if isinstance(raw, list) and len(raw) == 1 else raw]
                rows.append((dict(zip(names, raw, strict=True)), pid))
            return rows
    return [({}, None)]


def _compare_options(call: ast.Call, env: dict) -> dict:
    opts = dict(DEFAULTS)
    for k in call.keywords:
        opts[k.arg] = value(k.value, env)
    return opts


def _case(file, test, pid, gold, pred, expected, call, **extra) -> dict:
    # a row of a test written for an option of upstream's own semantics (match_types only changes
    # extraction; a precision other than 6 is checked by the benchmark against numeric_precision)
    params = extra.pop("row_params", ())
    options = {k: call[k] for k in ("strict", "allow_set_relation_comp") if k in params}
    return {"source": "math-verify", "file": file, "test": test, "param_id": pid, "gold": gold, "pred": pred,
            "expected": expected, "call": call, "upstream_options": options, **extra}  # fmt: skip


def compare_string_cases(file: str, fn: ast.FunctionDef) -> list[dict]:
    """Cases of a test that asserts ``compare_strings(...) == expected`` or ``verify(parse(g), parse(p))``."""
    out = []
    for row, pid in parametrize_rows(fn, {}):
        for node in ast.walk(fn):
            if not isinstance(node, ast.Compare) or not isinstance(node.left, ast.Call):
                continue
            callee = _name(node.left.func)
            try:
                if callee == "compare_strings":
                    gold, pred = (value(a, row) for a in node.left.args[:2])
                    call = {"kind": "compare_strings", **_compare_options(node.left, row)}
                elif callee == "int" and "verify(parse(gold), parse(pred))" in ast.unparse(node.left):
                    gold, pred, call = row["gold"], row["pred"], {"kind": "default"}
                else:
                    continue
                expected = value(node.comparators[0], row)
            except Skip:
                continue
            out.append(_case(file, fn.name, pid, gold, pred, int(expected), call, row_params=list(row)))
    return out


def string_extraction_cases(file: str, fn: ast.FunctionDef) -> list[dict]:
    out = []
    for row, pid in parametrize_rows(fn, {}):
        if row.get("expected"):  # [lowercased, original]
            call = {"kind": "string", "config": row["config"][1]}
            out.append(_case(file, fn.name, pid, row["expected"][1], row["pred"], 1, call))
    return out


# ----------------------------------------------------------------------------- symbolic test bodies


def body_cases(file: str, fn: ast.FunctionDef) -> list[dict]:
    """Cases from the assertions of a test body on ``parse`` / ``verify`` values."""
    out = []
    for row, pid in parametrize_rows(fn, {"sympy": None}):
        _walk(fn.body, dict(row), out, file, fn.name, pid)
    return out


def _walk(stmts, env, out, file, test, pid):
    for st in stmts:
        if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Name):
            try:
                env[st.targets[0].id] = value(st.value, env)
            except Skip:
                env.pop(st.targets[0].id, None)
        elif isinstance(st, ast.For):
            for item in value(st.iter, env):
                _walk(st.body, {**env, st.target.id: item}, out, file, test, pid)
        elif isinstance(st, ast.Assert):
            for gold, pred, expected, call in _assert_labels(st.test, env):
                out.append(_case(file, test, pid, gold, pred, expected, call))


def _text(v) -> str:
    """The source text of a value: a parsed prediction's input, or a sympy value's fraction."""
    if isinstance(v, tuple) and v[0] in ("parsed", "value"):
        return v[1]
    if isinstance(v, list) and len(v) == 1:
        return _text(v[0])
    raise Skip("no text")


def _call_of(*vals) -> dict:
    configs = {v[2] for v in vals if isinstance(v, tuple) and v[0] == "parsed"}
    return {"kind": "expr" if configs == {"expr"} else "default"}


def _verify_label(v, expected: bool):
    _, gold, pred = v
    if any(isinstance(x, tuple) and x[0] == "parsed" and x[3] for x in (gold, pred)):
        raise Skip("first_match mode")
    return (_text(gold), _text(pred), int(expected), _call_of(gold, pred))


def _assert_labels(test: ast.AST, env: dict) -> list[tuple]:  # noqa: C901 (one branch per assertion shape)
    try:
        if not isinstance(test, ast.Compare) or len(test.ops) != 1:
            raise Skip("not a comparison")
        op, right = test.ops[0], test.comparators[0]
        src = ast.unparse(test.left)
        if src.startswith("sympy.simplify(") and isinstance(op, ast.Eq):  # simplify(parsed[0] - V) == 0
            sub = test.left.args[0]
            parsed, val = value(sub.left.value, env), value(sub.right, env)
            return [(_text(val), _text(parsed), 1, _call_of(parsed))]
        if isinstance(op, ast.Eq) and isinstance(test.left, ast.Subscript) and src.startswith("parse("):
            pred = value(test.left.value, env)
            gold = value(right.value, env) if isinstance(right, ast.Subscript) else value(right, env)
            if pred[3] or (isinstance(gold, tuple) and gold[0] == "parsed" and gold[3]):
                raise Skip("first_match mode")
            if isinstance(gold, tuple) and gold[0] == "parsed" and gold[1] == pred[1]:
                raise Skip("same text on both sides")
            return [(_text(gold), pred[1], 1, _call_of(pred))]
        if isinstance(op, (ast.Is, ast.Eq)) and isinstance(right, (ast.Constant, ast.Name)):
            left, want = value(test.left, env), value(right, env)
            if isinstance(left, tuple) and left[0] == "verify" and isinstance(want, bool):
                return [_verify_label(left, want)]
            if isinstance(left, list) and isinstance(want, list) and left and left[0][0] == "verify":
                return [_verify_label(v, w) for v, w in zip(left, want, strict=True)]
            raise Skip("not a verify label")
    except (Skip, AttributeError, IndexError, TypeError, KeyError):
        pass
    return []


# ----------------------------------------------------------------------------- TRL


def trl_cases(path: Path) -> list[dict]:
    tree = ast.parse(path.read_text())
    out = []
    for cls in tree.body:
        if not (isinstance(cls, ast.ClassDef) and cls.name in TRL_CLASSES):
            continue
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_"):
                out.extend(_trl_test(cls.name, fn))
    return out


def _trl_test(cls: str, fn: ast.FunctionDef) -> list[dict]:
    env: dict = {}
    option = None
    verdicts: dict[int, object] = {}
    for st in ast.walk(fn):
        if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Name):
            name = st.targets[0].id
            if name in ("completion", "completions", "solution", "solutions"):
                env[name.rstrip("s")] = value(st.value, {})
            if name == "rewards" and isinstance(st.value, ast.Call):
                for k in st.value.keywords:
                    if k.arg == "reasoning_delimiters":
                        option = {"reasoning_delimiters": value(k.value, {})}
        if (
            isinstance(st, ast.Assert)
            and isinstance(st.test, ast.Compare)
            and isinstance(st.test.ops[0], (ast.Eq, ast.Is))
        ):
            left, right = st.test.left, st.test.comparators[0]
            target = ast.unparse(left)
            if isinstance(left, ast.Subscript) and target.startswith("rewards["):
                verdicts[value(left.slice, {})] = value(right, {})
            elif target in ("rewards", "results") and isinstance(right, ast.List):
                for i, item in enumerate(right.elts):
                    v = value(item.args[0], {}) if isinstance(item, ast.Call) else value(item, {})
                    verdicts[i] = v
    kind = {"TestAccuracyReward": "accuracy", "TestReasoningAccuracyReward": "reasoning_accuracy",
            "TestCosineScaledReward": "cosine_scaled"}[cls]  # fmt: skip
    out = []
    for i, v in sorted(verdicts.items()):
        expected = None if v is None else int(v > 0)
        out.append({"source": "trl", "file": "trl/tests/test_rewards.py", "test": f"{cls}.{fn.name}",
                    "param_id": str(i), "gold": env["solution"][i], "pred": env["completion"][i][0]["content"],
                    "expected": expected, "call": {"kind": kind}, "upstream_options": option or {}})  # fmt: skip
    return out


# ----------------------------------------------------------------------------- main


def math_verify_cases(root: Path) -> list[dict]:
    out = []
    for name in MV_FILES:
        tree = ast.parse((root / "tests" / name).read_text())
        for fn in tree.body:
            if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")):
                continue
            if name == "test_string_extraction.py":
                out.extend(string_extraction_cases(name, fn))
            elif name in ("test_mixed_number_extraction.py", "test_failed_latex_span.py"):
                out.extend(body_cases(name, fn))
            else:
                out.extend(compare_string_cases(name, fn))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--math-verify", type=Path, required=True, help="folder holding Math-Verify's tests/")
    ap.add_argument("--trl", type=Path, required=True, help="folder holding TRL's tests/test_rewards.py")
    ap.add_argument("-o", "--out", type=Path, default=Path(__file__).parent / "math_verify_cases.jsonl")
    args = ap.parse_args()
    cases = math_verify_cases(args.math_verify) + trl_cases(args.trl / "tests" / "test_rewards.py")
    seen: dict[str, int] = {}
    for c in cases:
        key = f"{c['file']}::{c['test']}"
        seen[key] = seen.get(key, 0) + 1
        c["id"] = f"{key}[{c['param_id'] or seen[key] - 1}]"
    with args.out.open("w") as f:
        f.write(json.dumps({"_sources": SOURCES, "cases": len(cases)}) + "\n")
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    by_file: dict[str, int] = {}
    for c in cases:
        by_file[c["file"]] = by_file.get(c["file"], 0) + 1
    print(json.dumps(by_file, indent=1), len(cases), "cases ->", args.out)


if __name__ == "__main__":
    main()
