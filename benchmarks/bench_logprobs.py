"""Benchmark: chunked ``token_logprobs`` vs the naive ``log_softmax(logits.float()).gather(...)``;
and, from hidden states, the fused ``hidden_logprobs`` (logits never built) vs both.

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

Hidden-state table (``--tables hidden``): hidden states ``h [B, T, H]`` (H = 1536, Qwen2.5-1.5B) and
the bf16 ``lm_head`` weight ``W [V, H]`` (both bf16, logits of std ~3); "naive" is
``log_softmax((h @ W.T).float()).gather(...)``, "chunked" is ``token_logprobs(h @ W.T, ...)`` (the
bf16 logits materialised, as the trainer does today), "fused" is ``hidden_logprobs(h, W, ...)``
(float32 tiles) and "fused-bf16" the same with ``bf16_logits=True`` (bf16 tile matmuls: today's numerics).
Modes: ``forward`` (``no_grad``), ``lora`` (forward + backward, ``W`` frozen: gradient w.r.t. ``h``
only) and ``full`` (forward + backward, gradients w.r.t. ``h`` and ``W``). Memory and time as above;
``h``, ``W`` and the labels are allocated before the baseline, the logits are not (the naive and
chunked variants build them inside the call). Errors: log-probs, and (backward modes) the gradient
w.r.t. ``h``, on the sampled tokens, against float64 computed from the same bf16 ``h`` and ``W``.

    python benchmarks/bench_logprobs.py                  # both tables: about 6 minutes on 2 cores
    python benchmarks/bench_logprobs.py --tables logits --batch 8 --chunk-size 128
    python benchmarks/bench_logprobs.py --tables hidden --hidden-batch 4 --hidden-seq 1024
    python benchmarks/bench_logprobs.py --tables hidden --device cuda --hidden-batch 8 --hidden-seq 4096

On CUDA the fused row takes bf16 products into float32 (``torch.mm(..., out_dtype=torch.float32)``)
where :func:`grpo_kit.algorithms.fused.f32_products` finds the op; the header says which. The CUDA
branch (device tensors, the allocator's peak, synchronised timing) is written against the real API
and has not been run: no GPU here.
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


# --------------------------------------------------------------------------- from hidden states

HIDDEN_VARIANTS = ("naive", "chunked", "fused", "fused-bf16")


def _setup_hidden(args: argparse.Namespace):
    """bf16 ``h [B, T, H]``, ``W [V, H]``, labels and loss weights ``[B, T]``, and the three variants."""
    import torch

    from grpo_kit.algorithms import hidden_logprobs, token_logprobs

    gen = torch.Generator().manual_seed(0)
    H, shape = args.hidden_dim, (args.hidden_batch, args.hidden_seq)  # made on the CPU, then moved: same numbers
    hidden = torch.randn(*shape, H, generator=gen).bfloat16()
    weight = torch.empty(VOCAB, H, dtype=torch.bfloat16)
    for start in range(0, VOCAB, 4096):  # block by block: no float32 [V, H] transient
        rows = weight[start : start + 4096]
        rows.copy_(torch.randn(rows.shape, generator=gen) * (3 / H**0.5))  # logits of std ~3
    labels = torch.randint(0, VOCAB, shape, generator=gen)
    weights = torch.randn(*shape, generator=gen)
    if args.device != "cpu":
        hidden, weight, labels, weights = (t.to(args.device) for t in (hidden, weight, labels, weights))
    chunk = args.chunk_size or None
    variants = {
        "naive": lambda h, w, y: torch.log_softmax((h @ w.T).float(), -1).gather(-1, y[..., None]).squeeze(-1),
        "chunked": lambda h, w, y: token_logprobs(h @ w.T, y, chunk_size=chunk),
        "fused": lambda h, w, y: hidden_logprobs(h, w, y)[0],
        "fused-bf16": lambda h, w, y: hidden_logprobs(h, w, y, bf16_logits=True)[0],
    }
    return hidden, weight, labels, weights, variants


def _call_hidden(fn, hidden, weight, labels, weights, mode: str):
    """forward (no_grad), lora (grad w.r.t. h) or full (h and W); returns ``(logp, grad_h or None)``."""
    import torch

    if mode == "forward":
        with torch.no_grad():
            return fn(hidden, weight, labels), None
    h = hidden.detach().requires_grad_()
    w = weight.detach().requires_grad_(mode == "full")
    logp = fn(h, w, labels)
    (logp * weights).sum().backward()
    return logp.detach(), h.grad


def hidden_memory_worker(variant: str, mode: str, out_path: str, args: argparse.Namespace) -> None:
    """Peak extra memory of one call: resident memory on the CPU; on CUDA, the allocator's peak
    (``torch.cuda.max_memory_allocated``) above what was allocated before the call."""
    import torch

    hidden, weight, labels, weights, variants = _setup_hidden(args)
    cuda = hidden.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else _rss_bytes()
    logp, grad = _call_hidden(variants[variant], hidden, weight, labels, weights, mode)
    if cuda:
        torch.cuda.synchronize()
    peak_extra = (torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()) - before
    sample = slice(None, None, labels.numel() // 64 + 1)
    H = hidden.shape[-1]
    hidden, labels, weights, logp = hidden.cpu(), labels.cpu(), weights.cpu(), logp.cpu()
    grad = None if grad is None else grad.cpu()
    torch.save({"logp": logp.view(-1)[sample].clone(),
                "grad": None if grad is None else grad.view(-1, H)[sample].clone(),
                "hidden": hidden.view(-1, H)[sample].clone(), "labels": labels.view(-1)[sample].clone(),
                "weights": weights.view(-1)[sample].clone()}, out_path)  # fmt: skip
    print(json.dumps({"peak_extra": peak_extra}))


def hidden_time_worker(mode: str, args: argparse.Namespace) -> None:
    import torch

    hidden, weight, labels, weights, variants = _setup_hidden(args)
    sync = torch.cuda.synchronize if hidden.device.type == "cuda" else (lambda: None)
    best = {name: float("inf") for name in variants}
    for name, fn in variants.items() if hidden.device.type == "cuda" else ():  # warm-up: kernels, cuBLAS
        _call_hidden(fn, hidden, weight, labels, weights, mode)
    for _ in range(args.repeats):
        for name, fn in variants.items():
            sync()
            t0 = time.perf_counter()
            _call_hidden(fn, hidden, weight, labels, weights, mode)
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    print(json.dumps(best))


def _hidden_errors(outs: dict, weight, grads: bool) -> dict[str, float]:
    """Max abs error vs float64 on the sampled tokens: log-probs, and d/dh (weighted) when ``grads``."""
    import torch

    s = outs["naive"]
    h = s["hidden"].double()  # [n, H]
    z = torch.cat([h @ weight[i : i + 8192].double().T for i in range(0, VOCAB, 8192)], -1)  # [n, V]
    logp = torch.log_softmax(z, -1)
    ref = logp.gather(-1, s["labels"][:, None]).squeeze(-1)  # [n]
    err = {k: (o["logp"].double() - ref).abs().max().item() for k, o in outs.items()}
    if grads:  # d logp / dh = W[y] - p @ W, times the loss weight
        p = logp.exp_()
        e_w = sum(p[:, i : i + 8192] @ weight[i : i + 8192].double() for i in range(0, VOCAB, 8192))  # [n, H]
        ref_g = (weight[s["labels"]].double() - e_w) * s["weights"].double()[:, None]
        err.update({f"grad {k}": (o["grad"].double() - ref_g).abs().max().item() for k, o in outs.items()})
        err["grad scale"] = ref_g.abs().max().item()
    return err


def hidden_table(args: argparse.Namespace, tmp: str) -> None:
    import torch

    from grpo_kit.algorithms.fused import f32_products

    gib, N = 2**30, args.hidden_batch * args.hidden_seq
    print(f"\nfrom hidden states: B x T = {args.hidden_batch} x {args.hidden_seq}, H = {args.hidden_dim}, "
          f"V = {VOCAB}, bf16 h and W; the logits would be {N * VOCAB * 2 / gib:.2f} GiB in bf16; on "
          f"{args.device}, fused tiles from {'bf16 products into float32' if f32_products(args.device) else 'float32 upcasts'}")  # fmt: skip
    weight = _setup_hidden(argparse.Namespace(**{**vars(args), "device": "cpu"}))[1]
    for mode in args.hidden_modes.split(","):
        mem, outs = {}, {}
        for variant in HIDDEN_VARIANTS:
            path = os.path.join(tmp, f"h-{variant}-{mode}.pt")
            mem[variant] = _subprocess(["hmemory", variant, mode, path], args)["peak_extra"]
            outs[variant] = torch.load(path)
        secs = _subprocess(["htime", mode], args)
        err = _hidden_errors(outs, weight, grads=mode != "forward")
        print(f"[{mode}] peak extra GiB: " + ", ".join(f"{k} {mem[k] / gib:.3f}" for k in HIDDEN_VARIANTS))
        for f in ("fused", "fused-bf16"):
            print(f"[{mode}] {f}: memory / naive {mem[f] / mem['naive']:.3f} (1/{mem['naive'] / mem[f]:.0f}),"
                  f" / chunked {mem[f] / mem['chunked']:.3f}; speed-up vs naive {secs['naive'] / secs[f]:.2f}x,"
                  f" vs chunked {secs['chunked'] / secs[f]:.2f}x")  # fmt: skip
        print(f"[{mode}] time s: " + ", ".join(f"{k} {secs[k]:.2f}" for k in HIDDEN_VARIANTS))
        print(f"[{mode}] max abs error vs float64: " + ", ".join(f"{k} {v:.2e}" for k, v in err.items()))


def _subprocess(worker_args: list[str], args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", *worker_args, "--batch", str(args.batch), "--seq", str(args.seq),
           "--chunk-size", str(args.chunk_size), "--repeats", str(args.repeats), "--hidden-dim", str(args.hidden_dim),
           "--hidden-batch", str(args.hidden_batch), "--hidden-seq", str(args.hidden_seq),
           "--device", args.device]  # fmt: skip
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
    p.add_argument("--tables", default="logits,hidden", help="logits (token_logprobs), hidden (hidden_logprobs)")
    p.add_argument("--hidden-dim", type=int, default=1536, help="H of the hidden table (Qwen2.5-1.5B: 1536)")
    p.add_argument("--hidden-batch", type=int, default=1)
    p.add_argument("--hidden-seq", type=int, default=1024)
    p.add_argument("--hidden-modes", default="forward,lora,full")
    p.add_argument("--device", default="cpu", help="the hidden table's device: cpu (peak RSS) or cuda "
                   "(the allocator's peak; kernels warmed up before timing). cuda: not run here")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, *rest = args.worker
        workers = {"memory": memory_worker, "time": time_worker, "hmemory": hidden_memory_worker,
                   "htime": hidden_time_worker}  # fmt: skip
        workers[kind](*rest, args)
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
    tables = args.tables.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(",") if "logits" in tables else []:
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
        if "hidden" in tables:
            hidden_table(args, tmp)


if __name__ == "__main__":
    main()
