"""``math_accuracy`` vs math-verify on Math-Verify's own labelled test cases (and TRL's).

The cases are ``benchmarks/math_verify_cases.jsonl`` (made by ``extract_math_verify_cases.py`` from
huggingface/Math-Verify's and huggingface/trl's tests, Apache-2.0; sources on its first line).
Each is (gold, prediction, verdict); the verdict is upstream's label, never ours.

- **Ours**: ``math_accuracy([completion], answer=[gold])`` with the default settings. A Math-Verify
  prediction with no answer marker of its own (``extract_answer`` finds nothing) is wrapped in
  ``<answer>...</answer>``: math-verify searches the whole text, our reward needs a marked answer.
  TRL's completions are given as they are (its rewards have the same contract as ours).
- **math-verify 0.9** is called as each test calls it: ``compare_strings``'s configurations and
  options (``match_types``, ``float_rounding``, ``strict``, ``allow_set_relation_comp``) for
  ``compare_strings`` cases, ``parse``/``verify`` defaults or ``ExprExtractionConfig`` for the
  others, TRL's ``accuracy_reward`` recipe (``reasoning_accuracy_reward``'s split on the delimiter)
  for TRL's cases.
- **Policy cases**: a case whose verdict from us changes when one documented setting is switched
  (``numeric_precision`` set to ``10**(1-p)`` for the case's ``float_rounding=p``,
  ``decimal_comma=True``, ``fallback="last_number"``, ``percent="scaled"``), or a row of a test
  written for one of upstream's own options (``strict``, ``allow_set_relation_comp``, custom
  ``reasoning_delimiters``). Agreement is shown with and without them.
- **False equal**: we (or math-verify) say 1 where the label is 0: a wrong answer rewarded.
- **Throughput**: both graders over all cases, one after the other in this one process: ours as
  one ``math_accuracy`` batch (the completions prepared before the clock, its caches cleared
  before each pass; best of ``--reps``), math-verify once (``parse`` + ``verify`` per case, with
  its own timeouts).

Usage::

    python benchmarks/bench_math_suite.py [--reps 3] [--readme]   # --readme rewrites its README section
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "benchmarks" / "math_verify_cases.jsonl"
README = ROOT / "benchmarks" / "README.md"
SECTION = "## math_accuracy vs math-verify on Math-Verify's own tests"
POLICY_SETTINGS = ("numeric_precision", "decimal_comma", "fallback", "percent")


def load_cases(path: Path = DATA) -> tuple[dict, list[dict]]:
    lines = path.read_text().splitlines()
    return json.loads(lines[0])["_sources"], [json.loads(line) for line in lines[1:]]


# ----------------------------------------------------------------------------- ours


def completion_of(case: dict) -> str:
    """The completion given to ``math_accuracy`` (a bare Math-Verify prediction gets answer tags)."""
    from rewards.math import extract_answer

    pred = case["pred"]
    if case["source"] == "math-verify" and extract_answer(pred) is None:
        return f"<answer>{pred}</answer>"
    return pred


def ours(case: dict, **settings) -> int | None:
    from rewards.math import math_accuracy

    (score,) = math_accuracy([completion_of(case)], answer=[case["gold"]], **settings)
    return None if score is None else int(score == 1.0)


def policy_tags(case: dict, default: int | None) -> list[str]:
    """The documented settings (and upstream options) this case's verdict depends on."""
    precision = case["call"].get("precision", 6)  # float_rounding=p: 10^(1-p) relative
    switched = {"numeric_precision": 10.0 ** (1 - precision), "decimal_comma": True,
                "fallback": "last_number", "percent": "scaled"}  # fmt: skip
    tags = [name for name, v in switched.items() if ours(case, **{name: v}) != default]
    return tags + [f"upstream:{k}" for k in case["upstream_options"]]


# ----------------------------------------------------------------------------- math-verify


def _mv_modules():
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig, parse, verify

    return NormalizationConfig, ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig, parse, verify


def _string_config(text: str):
    """``StringExtractionConfig(k=literal, ...)`` from the data file's text, without ``eval``."""
    call = ast.parse(text, mode="eval").body
    return _mv_modules()[3](**{k.arg: ast.literal_eval(k.value) for k in call.keywords})


def math_verify(case: dict) -> int | None:  # noqa: C901 (one branch per upstream call shape)
    Norm, Expr, Latex, _, parse, verify = _mv_modules()
    call, gold, pred = case["call"], case["gold"], case["pred"]
    kind = call["kind"]
    if kind == "compare_strings":
        configs = [Latex(boxed_match_priority=0) if t == "latex" else Expr() for t in call["match_types"]]
        return int(verify(parse(gold, configs), parse(pred, configs), float_rounding=call["precision"],
                          strict=call["strict"], allow_set_relation_comp=call["allow_set_relation_comp"]))
    if kind == "default":
        return int(verify(parse(gold), parse(pred)))
    if kind == "expr":
        return int(verify(parse(gold, [Expr()]), parse(pred, [Expr()])))
    if kind == "string":
        return int(parse(pred, [_string_config(call["config"])])[1:2] == [gold])
    # TRL's accuracy_reward / reasoning_accuracy_reward recipe
    if kind == "reasoning_accuracy":
        for delim in case["upstream_options"].get("reasoning_delimiters", ["</think>"]):
            if delim in pred:
                pred = pred.split(delim)[-1]
                break
        else:
            return 0
    gold_parsed = parse(gold)
    if not gold_parsed:
        return None
    config = [Latex(normalization_config=Norm(units=True), boxed_match_priority=0, try_extract_without_anchor=False)]
    return int(verify(gold_parsed, parse(pred, extraction_config=config, extraction_mode="first_match")))


# ----------------------------------------------------------------------------- report


def _rate(rows: list[dict], who: str) -> str:
    if not rows:
        return "-"
    ok = sum(r[who] == r["expected"] for r in rows)
    return f"{ok}/{len(rows)} ({100 * ok / len(rows):.1f}%)"


def _table(title: str, key, rows: list[dict]) -> list[str]:
    groups = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    out = [f"| {title} | cases | ours | math-verify |", "|---|---|---|---|"]
    for name, rs in sorted(groups.items()):
        out.append(f"| {name} | {len(rs)} | {_rate(rs, 'ours')} | {_rate(rs, 'mv')} |")
    return out


def _short(s: str, n: int = 70) -> str:
    s = s.replace("\n", "\\n").replace("|", "\\|")
    return s if len(s) <= n else s[: n // 2 - 2] + " … " + s[-(n // 2 - 2) :]


def timed(fn, cases: list[dict], reps: int, before=None) -> tuple[list, float]:
    best = float("inf")
    for _ in range(reps):
        if before:
            before()
        start = time.perf_counter()
        out = [fn(c) for c in cases]
        best = min(best, time.perf_counter() - start)
    return out, best


def report(cases: list[dict], t_ours: float, t_mv: float, sources: dict) -> list[str]:
    mv_rows = [c for c in cases if c["source"] == "math-verify"]
    plain = [c for c in mv_rows if not c["policy"]]
    lines = [SECTION, "", "Made by `python benchmarks/bench_math_suite.py` (cases: `benchmarks/math_verify_cases.jsonl`"
             ", made by `benchmarks/extract_math_verify_cases.py`,"
             f" {sources['licence']}). Default settings for ours.", "",
             "| figure | ours | math-verify 0.9 |", "|---|---|---|",
             f"| Math-Verify cases ({len(mv_rows)}) | {_rate(mv_rows, 'ours')} | {_rate(mv_rows, 'mv')} |",
             f"| without policy cases ({len(plain)}) | {_rate(plain, 'ours')} | {_rate(plain, 'mv')} |",
             f"| TRL cases | {_rate([c for c in cases if c['source'] == 'trl'], 'ours')} | "
             f"{_rate([c for c in cases if c['source'] == 'trl'], 'mv')} |"]  # fmt: skip
    fe_o = sum(c["ours"] == 1 and c["expected"] == 0 for c in cases)
    fe_m = sum(c["mv"] == 1 and c["expected"] == 0 for c in cases)
    fe_po = sum(c["ours"] == 1 and c["expected"] == 0 and not c["policy"] for c in cases)
    fe_pm = sum(c["mv"] == 1 and c["expected"] == 0 and not c["policy"] for c in cases)
    lines += [f"| false equal (a label-0 case called equal) | {fe_o} | {fe_m} |",
              f"| false equal outside policy cases | {fe_po} | {fe_pm} |",
              f"| cases/s, one process | {len(cases) / t_ours:.0f} | {len(cases) / t_mv:.1f} |",
              f"| throughput ratio ours / math-verify | {t_mv / t_ours:.0f}x | |", ""]  # fmt: skip
    lines += _table("file", lambda r: r["file"].replace("trl/tests/", "trl:"), cases) + [""]
    lines += _table("test (category)", lambda r: r["test"], cases) + [""]
    lines += _table("policy", lambda r: ",".join(r["policy"]) or "(none)", cases) + [""]
    for who, name in (("ours", "ours"), ("mv", "math-verify")):
        wrong = [c for c in cases if c[who] != c["expected"]]
        lines += [f"Cases {name} gets wrong ({len(wrong)}):", "",
                  "| id | gold | prediction | label | ours | math-verify | policy |", "|---|---|---|---|---|---|---|"]
        for c in wrong:
            lines.append(f"| {_short(c['id'].split('::')[-1], 50)} | `{_short(c['gold'], 40)}` | `{_short(c['pred'])}` "
                         f"| {c['expected']} | {c['ours']} | {c['mv']} | {','.join(c['policy'])} |")
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="timed passes of each grader (best is kept)")
    ap.add_argument("--readme", action="store_true", help=f"replace the {SECTION!r} section of benchmarks/README.md")
    args = ap.parse_args()
    sources, cases = load_cases()
    import logging

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    from rewards.math import _prepare_short, math_accuracy

    ours(cases[0]), math_verify(cases[0])  # imports and warm-up outside the clock
    completions = [completion_of(c) for c in cases]
    golds = [c["gold"] for c in cases]

    def ours_batch(_):
        return math_accuracy(completions, answer=golds)

    (scores,), t_ours = timed(ours_batch, [None], args.reps, before=_prepare_short.cache_clear)
    mine = [None if s is None else int(s == 1.0) for s in scores]
    theirs, t_mv = timed(math_verify, cases, 1)
    for c, o, m in zip(cases, mine, theirs, strict=True):
        c["ours"], c["mv"] = o, m
        c["policy"] = policy_tags(c, o)
    text = "\n".join(report(cases, t_ours, t_mv, sources))
    print(text)
    if args.readme:
        old = README.read_text()
        start = old.find(SECTION)
        end = old.find("\n## ", start + 1) if start >= 0 else -1
        head = old[:start] if start >= 0 else old.rstrip() + "\n\n"
        new = head + text + ("\n" + old[end + 1 :] if end >= 0 else "\n")
        README.write_text(new)


if __name__ == "__main__":
    main()
