"""Benchmark ``math_accuracy`` against math-verify (``parse`` + ``verify``) on the same rows.

Both graders run over ``benchmarks/data/math_mix.jsonl`` (made by ``make_math_data.py`` when
missing) in a ``multiprocessing.Pool`` of ``--processes`` workers, in chunks of ``--chunk-size``.
Workers import their grader before the clock starts. Printed: throughput (completions/s) of each,
the ratio ours / math-verify, the agreement rate, and each grader's accuracy against ``expected``
(the verdict by construction). Every disagreement goes to the ``## math_accuracy vs math-verify``
section of ``benchmarks/README.md`` (only that section is replaced).

math-verify is used as its README and open-r1's ``accuracy_reward`` use it: the gold is parsed
with ``parse("$" + gold + "$", extraction_mode="first_match")``, the completion with ``parse``
(``--mv-mode default``: the library's default extraction, LaTeX then plain expressions, which
scores higher here than open-r1's boxed-only config, ``--mv-mode open-r1``), and
``verify(gold, pred)`` decides. Each ``parse``/``verify`` keeps math-verify's own timeout. For each
disagreement the report also gives math-verify's verdict on the answer our extraction found, to
tell extraction differences from equivalence differences.

Usage::

    python benchmarks/bench_math_verify.py [--processes 2] [--chunk-size 64] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DATA = ROOT / "benchmarks" / "data" / "math_mix.jsonl"
README = ROOT / "benchmarks" / "README.md"
SECTION = "## math_accuracy vs math-verify"


# ----------------------------------------------------------------------------- graders (workers)


def _ours_chunk(rows: list[dict]) -> list[bool]:
    from rewards.math import math_accuracy

    scores = math_accuracy([r["completion"] for r in rows], answer=[r["answer"] for r in rows])
    return [s == 1.0 for s in scores]


_MV_PRED_CONFIG = None
_MV_MODE = "default"


def _mv_init(mode: str = "default") -> None:
    global _MV_PRED_CONFIG, _MV_MODE
    _MV_MODE = mode
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if mode == "default":  # the library's default: LaTeX, then plain expressions, no anchor needed
        _MV_PRED_CONFIG = [LatexExtractionConfig(), ExprExtractionConfig()]
    else:  # open-r1's accuracy_reward: boxed first, an anchor needed
        _MV_PRED_CONFIG = [
            LatexExtractionConfig(
                normalization_config=NormalizationConfig(
                    nits=False, malformed_operators=False, basic_latex=True, boxed="all", units=True
                ),
                boxed_match_priority=0,
                try_extract_without_anchor=False,
            )
        ]
    verify(parse("$1$"), parse(r"\boxed{1}", extraction_config=_MV_PRED_CONFIG))  # warm up


def _ours_init() -> None:
    from rewards.math import is_equivalent

    is_equivalent("1", "1")


def _mv_chunk(rows: list[dict]) -> list[bool]:
    from math_verify import parse, verify

    out = []
    for r in rows:
        gold = parse("$" + r["answer"] + "$", extraction_mode="first_match")
        if not gold:
            out.append(False)
            continue
        if _MV_MODE == "default":
            pred = parse(r["completion"])
        else:
            pred = parse(r["completion"], extraction_config=_MV_PRED_CONFIG, extraction_mode="first_match")
        out.append(bool(verify(gold, pred)))
    return out


def _run(fn, init, rows: list[dict], processes: int, chunk_size: int, initargs=()) -> tuple[list[bool], float]:
    chunks = [rows[i : i + chunk_size] for i in range(0, len(rows), chunk_size)]
    with Pool(processes, initializer=init, initargs=initargs) as pool:
        pool.map(_sleep0, range(processes))  # make sure every worker has initialised
        start = time.perf_counter()
        results = pool.map(fn, chunks, chunksize=1)
        elapsed = time.perf_counter() - start
    return [v for chunk in results for v in chunk], elapsed


def _sleep0(_: int) -> None:
    time.sleep(0.2)


# ----------------------------------------------------------------------------- report


def _cell(text: str | None) -> str:
    if text is None:
        return "(none)"
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > 80:
        text = text[:77] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _report(rows, ours, mv, t_ours, t_mv, processes, mv_mode) -> tuple[str, dict]:
    from rewards.math import extract_answer

    n = len(rows)
    figures = {
        "rows": n,
        "processes": processes,
        "math_verify_mode": mv_mode,
        "ours_per_s": n / t_ours,
        "math_verify_per_s": n / t_mv,
        "ratio": t_mv / t_ours,
        "agreement": sum(a == b for a, b in zip(ours, mv)) / n,
        "ours_accuracy": sum(a == r["expected"] for a, r in zip(ours, rows)) / n,
        "math_verify_accuracy": sum(b == r["expected"] for b, r in zip(mv, rows)) / n,
    }
    lines = [
        SECTION,
        "",
        "Made by `python benchmarks/bench_math_verify.py` (data: `benchmarks/make_math_data.py`,"
        " seeded). See the script's docstring for how math-verify is called.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| rows | {n} |",
        f"| processes | {processes} |",
        f"| math-verify completion extraction (`--mv-mode`) | {mv_mode} |",
        f"| ours, completions/s | {figures['ours_per_s']:.0f} |",
        f"| math-verify, completions/s | {figures['math_verify_per_s']:.0f} |",
        f"| throughput ratio ours / math-verify | {figures['ratio']:.1f}x |",
        f"| agreement | {100 * figures['agreement']:.1f}% |",
        f"| ours: accuracy vs expected | {100 * figures['ours_accuracy']:.1f}% |",
        f"| math-verify: accuracy vs expected | {100 * figures['math_verify_accuracy']:.1f}% |",
        "",
        "Disagreements:",
        "",
        "| category | completion answer | gold | ours | math-verify | right verdict "
        "| math-verify on the answer alone |",
        "|---|---|---|---|---|---|---|",
    ]
    equivalence_only = 0
    for r, a, b in zip(rows, ours, mv):
        if a != b:
            answer = extract_answer(r["completion"])
            alone = _mv_on_answer(answer, r["answer"])
            equivalence_only += alone != a
            lines.append(
                f"| {r['category']} | {_cell(answer)} | {_cell(r['answer'])} "
                f"| {a} | {b} | {r['expected']} | {alone} |"
            )
    figures["disagreements"] = sum(a != b for a, b in zip(ours, mv))
    figures["disagreements_on_answer_alone"] = equivalence_only
    lines[lines.index("Disagreements:")] = (
        f"Disagreements: {figures['disagreements']}. The last column gives math-verify the answer our "
        "extraction found (`parse('$' + answer + '$')`), which separates extraction differences "
        "(math-verify does not skip `<think>` or read `<answer>` tags) from equivalence differences: "
        f"{equivalence_only} disagreements remain on the answer alone."
    )
    return "\n".join(lines) + "\n", figures


def _mv_on_answer(answer: str | None, gold: str) -> bool:
    """math-verify's verdict on an already extracted answer (a diagnostic, in this process)."""
    from math_verify import parse, verify

    if answer is None:
        return False
    gold_parsed = parse("$" + gold + "$", extraction_mode="first_match")
    return bool(gold_parsed) and bool(verify(gold_parsed, parse("$" + answer + "$")))


def _write_section(section: str) -> None:
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("" if nxt < 0 else "\n" + text[nxt + 1 :])
    README.write_text(text)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    ap.add_argument(
        "--mv-mode",
        choices=["default", "open-r1"],
        default="default",
        help="math-verify's completion extraction: the library default, or open-r1's boxed-only config",
    )
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    args = ap.parse_args(argv)

    if not DATA.exists():
        import make_math_data

        make_math_data.main(["--out", str(DATA)])
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    rows = rows[: args.limit] if args.limit else rows

    ours, t_ours = _run(_ours_chunk, _ours_init, rows, args.processes, args.chunk_size)
    mv, t_mv = _run(_mv_chunk, _mv_init, rows, args.processes, args.chunk_size, (args.mv_mode,))
    section, figures = _report(rows, ours, mv, t_ours, t_mv, args.processes, args.mv_mode)
    for key, value in figures.items():
        print(f"{key:>30}: {value:.4g}" if isinstance(value, float) else f"{key:>30}: {value}")
    if not args.no_readme:
        _write_section(section)
        print(f"wrote {README.relative_to(ROOT)}")
    return figures


if __name__ == "__main__":
    main()
