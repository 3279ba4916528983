"""Peak memory and throughput of ``grpo-kit score``: streaming vs the old all-in-memory path.

For each size (default 50k, 200k and 1M rows) a JSONL of math completions is generated (8 per
prompt, about 366 bytes a row, like the issue's measurements) and scored with ``think_format`` and
``math_accuracy=2`` on 2 workers, once by the current :func:`grpo_kit.score_file.score_file`
(streaming) and once by the old one: ``grpo_kit/score_file.py`` as of ``--old-rev`` (read with
``git show``; it read every row with ``read_rows`` and re-read the whole output for the summary).
Each run is its own subprocess, which reports its peak RSS (``ru_maxrss`` of itself, the scoring
process; the reward workers are separate processes of a few tens of MB each, the same in both).
Printed: peak RSS of each, the ratio new / old, rows/s of each, and whether the two summaries
agree (every statistic but the timings).

Usage::

    python benchmarks/bench_score_memory.py [--sizes 50000,200000,1000000] [--workers 2]
        [--chunk-rows N] [--old-rev 7b1bcdb] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REWARDS = [{"name": "think_format"}, {"name": "math_accuracy", "weight": 2}]
TIMING = {"wall_time_s", "rows_per_s", "input", "output", "worker_restarts"}


def make_rows(path: Path, n: int, group: int = 8, seed: int = 0) -> None:
    """``n`` rows in groups of ``group`` per prompt: right, wrong and unformatted answers."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for g in range(0, n, group):
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            prompt = (f"Problem {g // group}: compute {a} * {b}. Think step by step inside <think> tags, "
                      "then give the final answer inside <answer> tags. Show your work briefly.")
            for _ in range(min(group, n - g)):
                ans = a * b + rng.choice([0, 0, 0, 1, -10, 100])
                if rng.random() < 0.8:
                    comp = (f"<think>\n{a} * {b}: first {a} * {b // 10 * 10} = {a * (b // 10 * 10)}, then "
                            f"{a} * {b % 10} = {a * (b % 10)}; add the two parts up, then check the sum by "
                            "estimating the product roughly.\n</think>\n"
                            f"<answer>\n{ans}\n</answer>")
                else:
                    comp = (f"The product of {a} and {b} is {ans}, which I computed by long multiplication "
                            "and then checked once more by estimating it.")
                f.write(json.dumps({"prompt": prompt, "completion": comp, "answer": str(a * b)}) + "\n")


def load_old(rev: str):
    """The old ``score_file`` module, from git."""
    src = subprocess.run(["git", "show", f"{rev}:grpo_kit/score_file.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_score_file.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_score_file", path)
    mod = sys.modules["old_score_file"] = importlib.util.module_from_spec(spec)  # pydantic resolves names there
    spec.loader.exec_module(mod)
    return mod


def child(mode: str, inp: str, out: str, workers: int, chunk_rows: int | None, rev: str) -> None:
    """One scoring run in this process; prints its summary and peak RSS as JSON."""
    from grpo_kit import score_file as new

    mod = load_old(rev) if mode == "old" else new
    cfg = {"rewards": REWARDS, "scoring": {"workers": workers}}
    if mode == "new" and chunk_rows:
        cfg["chunk_rows"] = chunk_rows
    summary = mod.score_file(mod.ScoreConfig(**cfg), inp, Path(out), overwrite=True, progress=False)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mb": peak_kb / 1024, "summary": summary}))


def run(mode: str, inp: Path, out: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(inp), str(out), "--workers", str(args.workers),
           "--old-rev", args.old_rev] + (["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else [])
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="50000,200000,1000000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-rows", type=int)
    ap.add_argument("--old-rev", default="7b1bcdb", help="the commit whose score_file is the old path")
    ap.add_argument("--modes", default="new,old")
    ap.add_argument("--keep", help="write the data and outputs here (default: a temporary folder)")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.workers, args.chunk_rows, args.old_rev)

    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_score_"))
    work.mkdir(parents=True, exist_ok=True)
    modes = args.modes.split(",")
    print(f"{'rows':>9} {'mode':>5} {'peak RSS MB':>12} {'rows/s':>9}  notes")
    for n in [int(s) for s in args.sizes.split(",")]:
        inp = work / f"in_{n}.jsonl"
        if not inp.exists():
            make_rows(inp, n)
        got = {}
        for mode in modes:
            out = work / f"out_{n}_{mode}.jsonl"
            got[mode] = run(mode, inp, out, args)
            out.unlink()
            s = got[mode]["summary"]
            print(f"{n:>9} {mode:>5} {got[mode]['peak_rss_mb']:>12.1f} {s['rows_per_s']:>9.0f}", flush=True)
        if len(got) == 2:
            new, old = got["new"], got["old"]
            same = ({k: v for k, v in new["summary"].items() if k not in TIMING}
                    == {k: v for k, v in old["summary"].items() if k not in TIMING})
            print(f"{n:>9} ratio new/old: RSS {new['peak_rss_mb'] / old['peak_rss_mb']:.3f}, rows/s "
                  f"{new['summary']['rows_per_s'] / old['summary']['rows_per_s']:.3f}; "
                  f"summaries {'identical' if same else 'DIFFER'}; input {inp.stat().st_size / n:.0f} B/row",
                  flush=True)
        if not args.keep:
            inp.unlink()


if __name__ == "__main__":
    main()
