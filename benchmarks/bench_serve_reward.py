"""Throughput of ``grpo-kit serve-reward`` + ``http_reward`` vs scoring in process, on loopback.

The data: ``benchmarks/make_math_data.py``'s seeded math completions (24 answer categories), in
groups of 8 per prompt, scored with ``math_accuracy`` in batches of ``--batch`` completions (a
training step's batch). In process: a :class:`~grpo_kit.scoring.Scorer` with ``--workers`` reward
processes. Served: ``grpo-kit serve-reward --reward math_accuracy --workers W`` in a subprocess on
127.0.0.1, and in this process a Scorer with one reward, ``http_reward`` (its requests of
``--request-size`` completions, ``--concurrency`` in flight). Both sides warm up first (workers
started, one batch scored); then the two are timed in turn, ``--repeats`` times each, and the
median completions/s of each and their ratio are printed. The served scores are checked equal to
the in-process ones.

Usage::

    python benchmarks/bench_serve_reward.py [--rows-per-category 192] [--batch 512] [--workers 2]
        [--request-size 128] [--concurrency 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from grpo_kit.config import RewardConfig, ScoringConfig  # noqa: E402
from grpo_kit.scoring import Scorer  # noqa: E402


def start_server(workers: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "grpo_kit", "serve-reward", "--reward", "math_accuracy",
                             "--workers", str(workers), "--port", "0", "--max-queue", "64"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            line = proc.stdout.readline()
            if " on http://" in line:
                return proc, line.split(" on ")[1].split()[0]
            if not line:
                break
    proc.kill()
    raise SystemExit("serve-reward did not start")


def time_scorer(scorer: Scorer, batches: list[tuple[list, dict, list]]) -> tuple[float, list]:
    t0 = time.perf_counter()
    scores: list = []
    for completions, columns, gids in batches:
        rb = scorer.score(completions, columns, gids)
        key = next(iter(rb.rewards))
        if any(e is not None for e in rb.reward_errors[key]):
            raise SystemExit(f"a reward failed: {next(e for e in rb.reward_errors[key] if e)}")
        scores += rb.rewards[key]
    return time.perf_counter() - t0, scores


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows-per-category", type=int, default=192)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--request-size", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from make_math_data import make_rows

    rows = make_rows(args.rows_per_category, seed=0)
    n = len(rows)
    batches = []
    for s in range(0, n, args.batch):
        part = rows[s:s + args.batch]
        gids = [f"p{(s + i) // 8}" for i in range(len(part))]
        batches.append(([r["completion"] for r in part], {"answer": [r["answer"] for r in part], "prompt": gids}, gids))

    scoring = ScoringConfig(workers=args.workers)
    proc, url = start_server(args.workers)
    try:
        remote = RewardConfig(name="http_reward", args={"url": url, "batch_size": args.request_size,
                                                        "concurrency": args.concurrency, "timeout": 120})
        with Scorer([RewardConfig(name="math_accuracy")], scoring) as local, \
                Scorer([remote], ScoringConfig(workers=0)) as served:
            time_scorer(local, batches[:1])  # warm-up: workers started, rewards imported
            time_scorer(served, batches[:1])
            local_s, served_s = [], []
            for _ in range(args.repeats):
                t, local_scores = time_scorer(local, batches)
                local_s.append(t)
                t, served_scores = time_scorer(served, batches)
                served_s.append(t)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)

    same = local_scores == served_scores
    local_rate, served_rate = n / statistics.median(local_s), n / statistics.median(served_s)
    print(f"completions: {n} in batches of {args.batch}; math_accuracy, {args.workers} reward workers each side; "
          f"http_reward requests of {args.request_size}, {args.concurrency} in flight; {args.repeats} runs each; "
          f"{os.cpu_count()} CPUs")
    print(f"in process:               {local_rate:8.0f} completions/s  (runs: "
          f"{', '.join(f'{n / t:.0f}' for t in local_s)})")
    print(f"serve-reward + http_reward: {served_rate:6.0f} completions/s  (runs: "
          f"{', '.join(f'{n / t:.0f}' for t in served_s)})")
    print(f"ratio served / in process: {served_rate / local_rate:.2f}x; scores equal: {same}")
    if not same:
        raise SystemExit("the served scores differ from the in-process ones")


if __name__ == "__main__":
    main()
