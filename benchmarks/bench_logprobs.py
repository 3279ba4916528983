"""Benchmark: chunked ``token_logprobs`` vs the naive ``log_softmax(logits.float()).gather(...)``.

At Qwen2.5's vocabulary (V = 151,936) with bf16 logits of ``B x T`` tokens, on CPU, it measures
the peak extra resident memory and the wall time of each variant, forward only (under ``no_grad``,
as when computing old/reference log-probs) and forward + backward (as in the trainer), and checks
both against a float64 reference.

Memory: each (variant, mode) runs once in a fresh subprocess, so that its peak RSS
(``ru_maxrss``) is its own: peak extra = peak RSS after the call - RSS just before it (torch
imported, logits and labels allocated; the logits are tiled from a small random block, so making
them leaves no transient peak above that baseline).

Time: one more subprocess per mode calls naive, chunked, naive, chunked, ... ``--repeats`` times
each and keeps each variant's best, so that a neighbour's load on a shared machine hits both alike.

    python benchmarks/bench_logprobs.py                  # 4 x 1024 tokens, about a minute on 2 cores
    python benchmarks/bench_logprobs.py --batch 8 --chunk-size 128
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
ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _setup(args: argparse.Namespace):
    """bf16 logits ``[B, T, V]``, labels ``[B, T]``, loss weights ``[B, T]``, and the two variants."""
    import torch

    from grpo_kit.algorithms.logprobs import token_logprobs

    gen = torch.Generator().manual_seed(0)
    logits = torch.empty(args.batch, args.seq, VOCAB, dtype=torch.bfloat16)
    rows = logits.view(-1, VOCAB)
    block = (torch.randn(64, VOCAB, generator=gen) * 3).bfloat16()  # 64 random rows, tiled: quick
    for start in range(0, rows.shape[0], 64):
        rows[start : start + 64] = block[: rows.shape[0] - start]
    labels = torch.randint(0, VOCAB, (args.batch, args.seq), generator=gen)
    weights = torch.randn(args.batch, args.seq, generator=gen)
    variants = {
        "naive": lambda z, y: torch.log_softmax(z.float(), dim=-1).gather(-1, y[..., None]).squeeze(-1),
        "chunked": lambda z, y: token_logprobs(z, y, chunk_size=args.chunk_size or None),
    }
    return logits, labels, weights, variants


def _call(fn, logits, labels, weights, mode: str):
    """One forward (no_grad) or forward + backward; returns ``(logp, grad or None)``."""
    import torch

    if mode == "forward":
        with torch.no_grad():
            return fn(logits, labels), None
    x = logits.detach().requires_grad_()
    logp = fn(x, labels)
    (logp * weights).sum().backward()
    return logp.detach(), x.grad


def memory_worker(variant: str, mode: str, out_path: str, args: argparse.Namespace) -> None:
    import torch

    logits, labels, weights, variants = _setup(args)
    before = _rss_bytes()
    logp, grad = _call(variants[variant], logits, labels, weights, mode)
    peak_extra = _peak_rss_bytes() - before
    # a sample of tokens is enough to check both variants against a float64 reference
    sample = slice(None, None, labels.numel() // 64 + 1)  # not a multiple of the 64-row tiling
    torch.save({"logp": logp.view(-1)[sample].clone(),
                "grad": None if grad is None else grad.view(-1, VOCAB)[sample].float(),
                "logits": logits.view(-1, VOCAB)[sample].clone(), "labels": labels.view(-1)[sample].clone(),
                "weights": weights.view(-1)[sample].clone()}, out_path)  # fmt: skip
    print(json.dumps({"peak_extra": peak_extra}))


def time_worker(mode: str, args: argparse.Namespace) -> None:
    logits, labels, weights, variants = _setup(args)
    best = {name: float("inf") for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            _call(fn, logits, labels, weights, mode)
            best[name] = min(best[name], time.perf_counter() - t0)
    print(json.dumps(best))


def _subprocess(worker_args: list[str], args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", *worker_args, "--batch", str(args.batch), "--seq", str(args.seq),
           "--chunk-size", str(args.chunk_size), "--repeats", str(args.repeats)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if done.returncode != 0:
        raise RuntimeError(f"worker {worker_args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _errors(outs: dict, grads: bool) -> dict[str, float]:
    """Max abs error of each variant vs float64 on the sampled tokens (log-probs, or logit grads)."""
    import torch

    s = outs["naive"]
    z = s["logits"].double().requires_grad_()  # [n, V]
    ref = torch.log_softmax(z, -1).gather(-1, s["labels"][:, None]).squeeze(-1)  # [n]
    if grads:
        (ref * s["weights"].double()).sum().backward()
        ref = z.grad
    got = {k: (o["grad"] if grads else o["logp"]).double() for k, o in outs.items()}
    return {"naive": (got["naive"] - ref).abs().max().item(),
            "chunked": (got["chunked"] - ref).abs().max().item(),
            "between": (got["naive"] - got["chunked"]).abs().max().item()}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--chunk-size", type=int, default=0, help="tokens per chunk (0: the library's default)")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per variant (the best is kept)")
    p.add_argument("--modes", default="forward,backward")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, *rest = args.worker
        memory_worker(*rest, args) if kind == "memory" else time_worker(*rest, args)
        return

    import torch

    sys.path.insert(0, str(ROOT))
    from grpo_kit.algorithms.logprobs import CHUNK_ELEMENTS

    chunk = args.chunk_size or max(1, CHUNK_ELEMENTS["cpu"] // VOCAB)
    gib = 2**30
    print(f"V={VOCAB}, B x T = {args.batch} x {args.seq}, bf16 logits "
          f"({args.batch * args.seq * VOCAB * 2 / gib:.2f} GiB), chunk_size={chunk}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")  # fmt: skip
    print("peak extra RSS (GiB), time (s), error = max |x - float64 reference| on ~64 sampled tokens")
    print(f"{'mode':9} {'naive GiB':>10} {'chunked GiB':>12} {'mem ratio':>10} {'naive s':>8} "
          f"{'chunked s':>10} {'speedup':>8} {'err naive':>10} {'err chunked':>12} {'|naive-chunked|':>16}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            mem, outs = {}, {}
            for variant in ("naive", "chunked"):
                path = os.path.join(tmp, f"{variant}-{mode}.pt")
                mem[variant] = _subprocess(["memory", variant, mode, path], args)["peak_extra"]
                outs[variant] = torch.load(path)
            secs = _subprocess(["time", mode], args)
            err = _errors(outs, grads=mode != "forward")
            print(f"{mode:9} {mem['naive'] / gib:10.3f} {mem['chunked'] / gib:12.3f} "
                  f"{mem['chunked'] / mem['naive']:10.3f} {secs['naive']:8.2f} {secs['chunked']:10.2f} "
                  f"{secs['naive'] / secs['chunked']:7.2f}x {err['naive']:10.2e} {err['chunked']:12.2e} "
                  f"{err['between']:16.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
