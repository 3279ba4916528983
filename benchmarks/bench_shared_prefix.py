"""Benchmark: ``train.shared_prefix`` (each group's prompt computed once, the completions continuing
from its key/value cache) vs the full padded forward, in one update pass (forward + backward of
every micro-batch, loss = the sum of the masked completion log-probs, as ``policy_update`` does).

Two batches, both built by the trainer's own ``make_batch`` and stored group by group:

- ``demo``: the built-in demo's update: its model (:func:`grpo_kit.demo.build_tiny_model`, 124k
  parameters, no warm start), 16 prompts ``a+b=`` of 4 tokens x 16 completions of 3 tokens, one
  micro-batch of 256 sequences;
- ``long``: prompts longer than their completions (a few-shot or long problem statement): the
  random-init 2.0M-parameter Qwen2 of ``bench_packing.py``, 4 prompts of 400-800 tokens (uniform)
  x 8 completions log-uniform in 50-500 tokens, micro-batches of 8 sequences (one group each).

Timing: a warm-up pass of each (not timed), then ``--repeats`` interleaved (full, shared, full, ...);
the best and the median of each, and the shared/full ratio of each repeat. 1 torch thread.
Tokens computed: the full forward feeds ``N x (P+T-1)`` columns; the shared one ``U x (P-1)`` for
the U distinct prompts plus ``N x T``.

    python benchmarks/bench_shared_prefix.py
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_packing import PAD, build_model  # noqa: E402

from grpo_kit.records import RolloutBatch  # noqa: E402
from grpo_kit.train.batch import Batch, forward_logprobs, make_batch  # noqa: E402


def batch_of(prompt_ids: list[list[int]], completion_ids: list[list[list[int]]], pad: int) -> Batch:
    rb = RolloutBatch.from_groups(prompts=[f"p{i}" for i in range(len(prompt_ids))], prompt_ids=prompt_ids,
                                  completions=[["" for _ in grp] for grp in completion_ids],
                                  completion_ids=completion_ids)
    rb.reward = [0.0] * rb.size
    return make_batch(rb, pad, torch.device("cpu"))


def demo_case():
    from transformers import AutoModelForCausalLM

    from grpo_kit.demo import build_tiny_model

    path = build_tiny_model(Path(tempfile.mkdtemp()) / "model", seed=0, warm_start_steps=0)
    model = AutoModelForCausalLM.from_pretrained(path).train()
    g = torch.Generator().manual_seed(0)
    prompts = [[int(a), 12, int(b), 13] for a, b in torch.randint(3, 12, (16, 2), generator=g)]  # "a+b="
    comps = [[torch.randint(3, 12, (3,), generator=g).tolist() for _ in range(16)] for _ in prompts]
    return model, batch_of(prompts, comps, model.config.pad_token_id or 0), 256


def long_case():
    model = build_model(1024, 256, 704, 2, 4, 2)
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(1, 1024, (n,), generator=g).tolist()  # noqa: E731
    prompts = [ids(int(torch.randint(400, 801, (1,), generator=g))) for _ in range(4)]
    lo, hi = math.log(50), math.log(500)
    comps = [[ids(int(round(math.exp(lo + (hi - lo) * float(torch.rand(1, generator=g)))))) for _ in range(8)]
             for _ in prompts]
    return model, batch_of(prompts, comps, PAD), 8


def update_pass(model, batch: Batch, micro: int, shared: bool) -> tuple[torch.Tensor, float]:
    model.zero_grad(set_to_none=True)
    parts = []
    t0 = time.perf_counter()
    for s in range(0, batch.size, micro):
        sub = batch.rows(torch.arange(s, min(s + micro, batch.size)))
        logp, _ = forward_logprobs(model, sub, temperature=1.0, autocast=False, shared_prefix=shared)
        (logp * sub.completion_mask).sum().backward()
        parts.append(logp.detach())
    return torch.cat(parts), time.perf_counter() - t0


def run(name: str, model, batch: Batch, micro: int, repeats: int) -> None:
    N, T = batch.completion_ids.shape
    P = batch.prompt_len
    U = sum(len(torch.unique(batch.input_ids[s:s + micro, :P - 1], dim=0)) for s in range(0, N, micro))
    full_tok, shared_tok = N * (P + T - 1), U * (P - 1) + N * T
    print(f"\n{name}: N = {N} sequences, P = {P}, T = {T}, micro-batches of {micro}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")
    print(f"  tokens fed: full N x (P+T-1) = {full_tok:,}; shared U x (P-1) + N x T = {shared_tok:,} "
          f"(U = {U}): {shared_tok / full_tok:.2f}x")
    m = batch.completion_mask
    lp_full, _ = update_pass(model, batch, micro, False)
    g_full = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    lp_shared, _ = update_pass(model, batch, micro, True)
    g_shared = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    times = {False: [], True: []}
    for _ in range(repeats):
        for shared in (False, True):
            times[shared].append(update_pass(model, batch, micro, shared)[1])
    print("  update pass, forward + backward   best       median     repeats")
    for shared, label in ((False, "full forward"), (True, "shared prefix")):
        t = times[shared]
        print(f"    {label:<30} {min(t) * 1e3:8.1f} ms {statistics.median(t) * 1e3:8.1f} ms   "
              + " ".join(f"{x * 1e3:.1f}" for x in t))
    ratios = [b / a for a, b in zip(times[False], times[True])]
    print(f"    shared / full                  {min(times[True]) / min(times[False]):8.2f}x "
          f"{statistics.median(times[True]) / statistics.median(times[False]):8.2f}x    "
          + " ".join(f"{r:.2f}" for r in ratios) + " (per repeat)")
    print(f"  check: max |log-prob shared - full| {float(((lp_shared - lp_full) * m).abs().max()):.2e}; "
          f"max |grad difference| = {float((g_shared - g_full).abs().max() / g_full.abs().max()):.1e} x max |grad|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cases", nargs="+", default=["demo", "long"], choices=["demo", "long"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread")
    for name in args.cases:
        run(name, *(demo_case() if name == "demo" else long_case()), args.repeats)


if __name__ == "__main__":
    main()
