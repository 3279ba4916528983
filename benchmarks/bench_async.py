"""The built-in demo with ``train.async_level`` 0 (synchronous), 1 and 2, the same seed, one run
after another on this machine, through the CLI (``grpo-kit train --set train.async_level=K``).

Each process gets its threads: ``train.torch_threads`` 2 is the machine's two cores; with k >= 1
the trainer keeps one and the rollout process takes the other (``train.sampler_threads``'s
default). Prints, per level: the wall time of the run, the mean step time after the first 10
steps, its ratio to the synchronous run's, the mean reward of the first and last 10 steps (the
demo's target: <= 0.3 then >= 0.8), the staleness, and the trainer's and the sampler's idle time.

    python benchmarks/bench_async.py                  # the whole demo (DEMO_STEPS = 800 steps), about 4 minutes
    python benchmarks/bench_async.py --steps 300 --levels 0 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(level: int, steps: int, seed: int, out: Path, extra: list[str] = ()) -> dict:
    from grpo_kit.train.logger import read_metrics

    cmd = [sys.executable, "-m", "grpo_kit.cli", "train", "--output-dir", str(out), "--set", "run.progress=false",
           "--set", f"train.async_level={level}", "--set", f"train.steps={steps}", "--set", f"seed={seed}",
           "--set", "train.samples_every=0", *[a for kv in extra for a in ("--set", kv)]]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    wall = time.perf_counter() - t0
    rows = read_metrics(out / "metrics.jsonl")
    timed = rows[10:]

    def mean(key):
        return statistics.mean(r.get(key, 0.0) for r in timed)

    return {"wall_s": wall, "step_s": mean("time/step"), "first10": statistics.mean(r["reward/mean"] for r in rows[:10]),
            "last10": statistics.mean(r["reward/mean"] for r in rows[-10:]),
            "staleness": mean("async/staleness_mean"), "wait_trainer_s": mean("async/wait_trainer_s"),
            "wait_sampler_s": mean("async/wait_sampler_s"), "update_s": mean("time/update"),
            "sample_s": mean("time/sample"), "score_s": mean("time/score"), "weight_sync_s": mean("time/weight_sync"),
            "weight_load_s": mean("time/weight_load")}


def main() -> None:
    from grpo_kit.demo import DEMO_STEPS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=DEMO_STEPS)
    ap.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="a further setting for every run (e.g. train.sampler_threads=1)")
    args = ap.parse_args()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.levels:
            res[k] = run(k, args.steps, args.seed, Path(tmp) / f"k{k}", args.extra)
            print(f"async_level {k}: done in {res[k]['wall_s']:.1f} s", file=sys.stderr)
    base = res.get(0)
    print(f"demo, {args.steps} steps, seed {args.seed}, {os.cpu_count()} CPUs; means over steps 11-{args.steps}"
          + (f"; settings {' '.join(args.extra)}" if args.extra else ""))
    print("| async_level | wall s | step s | ratio to k=0 | reward first 10 -> last 10 | staleness | trainer idle s"
          " | sampler idle s | update s | sample + score s | weight sync s (trainer) | weight load s (sampler) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, r in res.items():
        ratio = f"{r['step_s'] / base['step_s']:.2f}x (wall {r['wall_s'] / base['wall_s']:.2f}x)" if base else "-"
        print(f"| {k} | {r['wall_s']:.1f} | {r['step_s']:.4f} | {ratio} | {r['first10']:.3f} -> {r['last10']:.3f} | "
              f"{r['staleness']:.2f} | {r['wait_trainer_s']:.4f} | {r['wait_sampler_s']:.4f} | {r['update_s']:.4f} | "
              f"{r['sample_s'] + r['score_s']:.4f} | {r['weight_sync_s']:.4f} | {r['weight_load_s']:.4f} |")


if __name__ == "__main__":
    main()
