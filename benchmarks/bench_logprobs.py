"""Benchmark: chunked ``token_logprobs`` vs the naive ``log_softmax(logits.float()).gather(...)``.

At Qwen2.5's vocabulary (V = 151,936) with bf16 logits of ``B x T`` tokens, on CPU, it measures for
each variant the peak extra resident memory and the wall time, forward only (under ``no_grad``, as
when scoring old/reference log-probs) and forward + backward (as in the trainer), and checks that
the two variants agree (log-probs and logit gradients).

Each (variant, mode) runs in a fresh subprocess, so that its peak RSS (``ru_maxrss``) is its own:
peak extra memory = peak RSS during the call - RSS just before it (torch imported, logits and
labels allocated). The logits are filled a few rows at a time so that making them leaves no
transient peak above that baseline. Time: best of ``--repeats`` calls in the same process.

    python benchmarks/bench_logprobs.py                  # 4 x 1024 tokens, ~1 min on 2 cores
    python benchmarks/bench_logprobs.py --batch 8 --seq 1024 --chunk-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 151_936  # Qwen2.5


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def worker(variant: str, mode: str, args: argparse.Namespace, out_path: str) -> None:
    import torch

    from grpo_kit.algorithms.logprobs import token_logprobs

    def naive(logits, labels):
        return torch.log_softmax(logits.float(), dim=-1).gather(-1, labels[..., None]).squeeze(-1)

    def chunked(logits, labels):
        return token_logprobs(logits, labels, chunk_size=args.chunk_size or None)

    fn = {"naive": naive, "chunked": chunked}[variant]
    gen = torch.Generator().manual_seed(0)
    logits = torch.empty(args.batch, args.seq, VOCAB, dtype=torch.bfloat16)
    rows = logits.view(-1, VOCAB)
    for start in range(0, rows.shape[0], 16):  # small float32 temporaries only
        rows[start : start + 16] = torch.randn(rows[start : start + 16].shape, generator=gen) * 3
    labels = torch.randint(0, VOCAB, (args.batch, args.seq), generator=gen)
    weights = torch.randn(args.batch, args.seq, generator=gen)

    def call():
        if mode == "forward":
            with torch.no_grad():
                return fn(logits, labels), None
        logits.grad = None
        x = logits.requires_grad_()
        logp = fn(x, labels)
        (logp * weights).sum().backward()
        return logp.detach(), x.grad

    before = _rss_bytes()
    t0 = time.perf_counter()
    logp, grad = call()
    times = [time.perf_counter() - t0]
    peak_extra = _peak_rss_bytes() - before
    del grad
    for _ in range(args.repeats - 1):
        t0 = time.perf_counter()
        logp, grad = call()
        times.append(time.perf_counter() - t0)
    # a sample of rows is enough to check both variants against a float64 reference
    sample = slice(None, None, max(1, rows.shape[0] // 64))
    torch.save({"logp": logp.view(-1)[sample].clone(), "grad": None if grad is None else grad.view(-1, VOCAB)[sample].float(),
                "logits": rows[sample].detach().clone(), "labels": labels.view(-1)[sample].clone(),
                "weights": weights.view(-1)[sample].clone()}, out_path)  # fmt: skip
    print(json.dumps({"peak_extra": peak_extra, "time": min(times), "baseline_rss": before}))


def run_one(variant: str, mode: str, args: argparse.Namespace, out_path: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, mode, out_path,
           "--batch", str(args.batch), "--seq", str(args.seq),
           "--chunk-size", str(args.chunk_size), "--repeats", str(args.repeats)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant}/{mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--chunk-size", type=int, default=0, help="tokens per chunk (0: the library's default)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--modes", default="forward,backward")
    p.add_argument("--worker", nargs=3, metavar=("VARIANT", "MODE", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(*args.worker[:2], args, args.worker[2])
        return

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from grpo_kit.algorithms.logprobs import CHUNK_ELEMENTS

    chunk = args.chunk_size or max(1, CHUNK_ELEMENTS["cpu"] // VOCAB)
    gib = 2**30
    print(f"V={VOCAB}, B x T = {args.batch} x {args.seq}, bf16 logits "
          f"({args.batch * args.seq * VOCAB * 2 / gib:.2f} GiB), chunk_size={chunk}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")  # fmt: skip
    print("peak extra RSS (GiB) and time (s); error: max |x - float64 reference| on 64 sampled tokens")
    print(f"{'mode':9} {'naive GiB':>10} {'chunked GiB':>12} {'mem ratio':>10} {'naive s':>8} "
          f"{'chunked s':>10} {'speedup':>8} {'err naive':>10} {'err chunked':>12} {'|naive-chunked|':>16}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            res, outs = {}, {}
            for variant in ("naive", "chunked"):
                path = os.path.join(tmp, f"{variant}-{mode}.pt")
                res[variant] = run_one(variant, mode, args, path)
                outs[variant] = torch.load(path)
            err = _errors(outs, grads=mode != "forward")
            n, c = res["naive"], res["chunked"]
            print(f"{mode:9} {n['peak_extra'] / gib:10.3f} {c['peak_extra'] / gib:12.3f} "
                  f"{c['peak_extra'] / n['peak_extra']:10.3f} {n['time']:8.2f} {c['time']:10.2f} "
                  f"{n['time'] / c['time']:7.2f}x {err['naive']:10.2e} {err['chunked']:12.2e} "
                  f"{err['between']:16.2e}")  # fmt: skip


def _errors(outs: dict, grads: bool) -> dict[str, float]:
    """Max abs error of each variant vs float64 on the sampled tokens (log-probs, or logit grads)."""
    import torch

    s = outs["naive"]
    z = s["logits"].detach().double().requires_grad_()  # [n, V]
    ref = torch.log_softmax(z, -1).gather(-1, s["labels"][:, None]).squeeze(-1)  # [n]
    if grads:
        (ref * s["weights"].double()).sum().backward()
        ref = z.grad
    got = {k: (o["grad"] if grads else o["logp"]).double() for k, o in outs.items()}
    return {"naive": (got["naive"] - ref).abs().max().item(),
            "chunked": (got["chunked"] - ref).abs().max().item(),
            "between": (got["naive"] - got["chunked"]).abs().max().item()}  # fmt: skip


if __name__ == "__main__":
    main()
