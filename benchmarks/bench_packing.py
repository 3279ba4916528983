"""Benchmark: padding-free (packed) update passes vs the padded layout, on a batch with a realistic
length spread.

The batch: 4 prompts x 4 completions = 16 sequences (seed 0), built by the trainer's own
``make_batch`` from a :class:`RolloutBatch`. Prompts are uniform in 50-200 tokens. Completion
lengths are log-uniform in [50, 2000], stratified: one draw in each of 16 equal-probability strata,
shuffled, so that 16 draws cover the range whatever the seed. Token ids are random.

The model: a random-init ``transformers`` Qwen2 built locally (``Qwen2Config``): vocab 1024, hidden 256,
intermediate 704, 2 layers, 4 heads, 2 KV heads. That is 2.0M params, float32,
``attn_implementation="sdpa"``. There are 2 layers, not 4, to keep the run short on 2 cores. Every
layer costs the same, so the ratios hardly depend on the depth (``--model 1024 256 704 4 4 2`` for 4).

One update pass: forward + backward of every micro-batch through
:func:`grpo_kit.train.batch.forward_logprobs`, loss = the sum of the masked completion log-probs,
gradients accumulated, as in ``policy_update``. The micro-batches are the trainer's
(:func:`grpo_kit.train.update._split`, rows in batch order):

- padded: 4 sequences per micro-batch (``train.micro_batch_size: 4``), each ``[4, P+T]`` of the
  whole batch's width (``Batch.rows`` keeps every column);
- packed (``train.packing: true``): ``train.micro_batch_tokens`` = 4 x the mean sequence length,
  no sequence cap; each micro-batch is one row of its real tokens.

Timing: a warm-up pass of each layout (not timed), then 3 repeats interleaved (padded, packed,
padded, packed, ...), so the neighbours' load hits both alike. It reports the best of each (the
least disturbed by the load) and the median, and the packed/padded ratio of each repeat. It uses 1
torch thread: on cores shared with other jobs, 2 threads gave passes that varied 3x from one repeat
to the next. Peak RSS: one pass of each layout in a fresh subprocess
(``--worker``), ``VmHWM`` reset (``echo 5 > /proc/self/clear_refs``) just before the pass.
``ru_maxrss`` is not used: in the child it read 1.5 GB for both layouts, which is the parent's
peak at the fork (Linux keeps the high-water mark across fork and exec).

Measured 2026-12-02 on 2 CPU cores shared with a CI run and another job (load average ~3-4),
torch 2.13 CPU, transformers 5.19, 1 thread:

    completion lengths: min 55, median 254, mean 524, max 1715; P = 122, T = 1715
    sequence lengths (prompt + completion): mean 623, sum 9967

    tokens computed / real tokens
      padded  N x (P+T) = 16 x 1837 = 29392    2.95x
      packed  sum of lengths = 9967            1.00x (by construction)
      padded / packed                          2.95x the tokens
    micro-batches: padded 4 x 4 sequences; packed 5 under a budget of 2492 tokens
      (real tokens 2024, 2385, 2214, 2312, 1032)
    attention score elements per layer and head (dense, causal half not subtracted):
      padded 54.0M (n x W^2), packed with sdpa 21.1M (S^2 per micro-batch), varlen 10.5M (sum l^2)

    update pass, forward + backward     best      median    repeats
      padded (4 seq / micro-batch)      10.54 s   11.83 s   10.54  11.83  12.30
      packed (2492-token budget)         4.52 s    4.68 s    5.23   4.52   4.68
      packed / padded                    0.43x     0.40x     0.50   0.38   0.38 (per repeat)
      real tokens per second (best): padded 946, packed 2203

    check: max |log-prob packed - padded| over the 8387 completion tokens 1.43e-06;
      max |grad difference| 1.24e-04 = 6.0e-07 x max |grad|; packed log-probs 0 off the mask

    peak RSS of one pass (fresh process, VmHWM)   before    pass peak   pass adds
      padded                                      456 MB    1365 MB     908 MB
      packed                                      457 MB     731 MB     274 MB

A second run, right after, agreed: the same token and attention figures and check; padded 10.07 s,
packed 3.70 s best (0.37x best and median; per repeat 0.36, 0.37, 0.37).

How to read it. Packed computes 2.95x fewer tokens. The pass takes 0.37-0.43x the time (2.3-2.7x
faster) and adds 0.3x the memory. With sdpa, transformers gives a packed micro-batch a dense S x S
block-diagonal mask. So the attention-score count drops only 2.6x here (54.0M -> 21.1M), not the
5.1x of a variable-length kernel that computes only the sum of l^2 (``flash_attention_2`` on a
GPU). The linear layers, which dominate at real model widths, scale with the token ratio. That ratio
depends on the spread: the padded width is the longest prompt plus the longest completion. CPU
timings of this tiny model say nothing about absolute GPU throughput.

    python benchmarks/bench_packing.py               # ~2 minutes on 2 busy cores
    python benchmarks/bench_packing.py --no-rss --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from grpo_kit.records import RolloutBatch  # noqa: E402
from grpo_kit.train.batch import Batch, forward_logprobs, make_batch  # noqa: E402
from grpo_kit.train.update import _split  # noqa: E402

PAD = 0


def build_model(vocab: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int):
    """A random-init Qwen2 in float32 with sdpa attention (seeded, so every process gets the same)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=PAD,
                      attn_implementation="sdpa")
    model = Qwen2ForCausalLM(cfg).float()
    model.config._attn_implementation = "sdpa"
    return model.train()


def build_batch(*, groups: int, group_size: int, vocab: int, seed: int) -> Batch:
    """``groups`` prompts of 50-200 tokens (uniform), ``group_size`` completions each whose lengths
    are log-uniform in [50, 2000] (most short, a long tail, as in reasoning RL), stratified: one
    draw in each of the N equal-probability strata, shuffled over the sequences, so that 16 draws
    span the range whatever the seed; random token ids in ``1 .. vocab-1`` (0 is the pad)."""
    g = torch.Generator().manual_seed(seed)
    rand_ids = lambda n: torch.randint(1, vocab, (n,), generator=g).tolist()  # noqa: E731
    prompt_ids = [rand_ids(int(torch.randint(50, 201, (1,), generator=g))) for _ in range(groups)]
    n = groups * group_size
    lo, hi = math.log(50), math.log(2000)
    u = (torch.randperm(n, generator=g) + torch.rand(n, generator=g)) / n  # [n] one in each stratum
    lens = [int(round(math.exp(lo + (hi - lo) * float(x)))) for x in u]
    comp = [[rand_ids(lens[b * group_size + j]) for j in range(group_size)] for b in range(groups)]
    rb = RolloutBatch.from_groups(prompts=[f"p{i}" for i in range(groups)], prompt_ids=prompt_ids,
                                  completions=[["" for _ in grp] for grp in comp], completion_ids=comp)
    rb.reward = [0.0] * rb.size
    return make_batch(rb, PAD, torch.device("cpu"))


def micro_batches(batch: Batch, packed: bool, micro: int, budget: int) -> list[torch.Tensor]:
    """The trainer's split (:func:`grpo_kit.train.update._split`): padded by ``micro`` sequences,
    packed by a ``budget`` of tokens (no sequence cap beyond the batch)."""
    rows = torch.arange(batch.size)
    if packed:
        return _split(rows, batch.size, budget, batch.lengths)
    return _split(rows, micro, None, batch.lengths)


def update_pass(model, batch: Batch, chunks: list[torch.Tensor], packed: bool) -> tuple[torch.Tensor, float]:
    """Forward + backward of every micro-batch (loss: the sum of the masked completion log-probs),
    gradients accumulated as in the trainer; ``(log-probs [N, T], seconds)``."""
    model.zero_grad(set_to_none=True)
    parts = []
    t0 = time.perf_counter()
    for idx in chunks:
        sub = batch.rows(idx)
        logp, _ = forward_logprobs(model, sub, temperature=1.0, autocast=False, packed=packed)
        (logp * sub.completion_mask).sum().backward()
        parts.append(logp.detach())
    dt = time.perf_counter() - t0
    return torch.cat(parts), dt


def _status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def worker(args, layout: str) -> None:
    """One update pass of ``layout`` in this fresh process; prints its memory as JSON."""
    model, batch = build_model(*args.model), build_batch(groups=args.groups, group_size=args.group_size,
                                                         vocab=args.model[0], seed=args.seed)
    packed = layout == "packed"
    chunks = micro_batches(batch, packed, args.micro, budget_of(args, batch))
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the pass's own peak from here
    update_pass(model, batch, chunks, packed)
    print(json.dumps({"before": before, "pass_peak": _status("VmHWM")}))


def budget_of(args, batch: Batch) -> int:
    return args.budget or int(round(args.budget_x * float(batch.lengths.float().mean())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=4, help="prompts (B)")
    ap.add_argument("--group-size", type=int, default=4, help="completions per prompt (G)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--micro", type=int, default=4, help="padded: sequences per micro-batch")
    ap.add_argument("--budget-x", type=float, default=4.0, help="packed: token budget = this x the mean length")
    ap.add_argument("--budget", type=int, default=None, help="packed: token budget (overrides --budget-x)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes of each layout, interleaved")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on shared cores)")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    ap.add_argument("--model", type=int, nargs=6, default=[1024, 256, 704, 2, 4, 2],
                    metavar=("VOCAB", "HIDDEN", "INTER", "LAYERS", "HEADS", "KV"))
    ap.add_argument("--worker", choices=["padded", "packed"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args, args.worker)

    model = build_model(*args.model)
    batch = build_batch(groups=args.groups, group_size=args.group_size, vocab=args.model[0], seed=args.seed)
    N, width = batch.input_ids.shape
    lens = batch.lengths
    real = int(lens.sum())
    comp = batch.completion_mask.sum(-1)
    budget = budget_of(args, batch)
    chunks = {False: micro_batches(batch, False, args.micro, budget), True: micro_batches(batch, True, args.micro, budget)}
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Qwen2 random init, float32, sdpa: "
          f"vocab {args.model[0]}, hidden {args.model[1]}, intermediate {args.model[2]}, {args.model[3]} layers, "
          f"{args.model[4]} heads, {args.model[5]} KV heads: {n_params / 1e6:.2f}M params")
    print(f"batch: {args.groups} prompts x {args.group_size} = {N} sequences (seed {args.seed}); prompts uniform "
          f"50-200, completions log-uniform 50-2000")
    print(f"  completion lengths: min {int(comp.min())}, median {int(comp.median())}, mean {float(comp.float().mean()):.0f}, "
          f"max {int(comp.max())}; P = {batch.prompt_len}, T = {width - batch.prompt_len}")
    print(f"  sequence lengths (prompt + completion): mean {float(lens.float().mean()):.0f}, sum {real}")
    print()
    padded_tok = N * width
    print("tokens computed / real tokens:")
    print(f"  padded  N x (P+T) = {N} x {width} = {padded_tok}: {padded_tok / real:.2f}x")
    print(f"  packed  sum of lengths = {real}: 1.00x (by construction: only real tokens are in the row)")
    print(f"  padded / packed: {padded_tok / real:.2f}x the tokens")
    sizes = lambda cs: [int(lens[c].sum()) for c in cs]  # noqa: E731
    print(f"micro-batches: padded {len(chunks[False])} x {args.micro} sequences of {width} columns; "
          f"packed {len(chunks[True])} under a budget of {budget} tokens ({args.budget_x:g} x the mean length), "
          f"real tokens {sizes(chunks[True])}")
    att_pad = sum(len(c) * width ** 2 for c in chunks[False])
    att_pack = sum(int(lens[c].sum()) ** 2 for c in chunks[True])
    att_var = int((lens.long() ** 2).sum())
    print(f"attention scores per layer and head (dense elements, causal half not subtracted): padded "
          f"{att_pad / 1e6:.1f}M (n x W^2 per micro-batch); packed with sdpa {att_pack / 1e6:.1f}M (S^2 per micro-batch: "
          f"a dense block-diagonal mask); packed varlen (flash-attention 2) {att_var / 1e6:.1f}M (sum of l^2)")
    print()

    times: dict[bool, list[float]] = {False: [], True: []}
    logps: dict[bool, torch.Tensor] = {}
    grads: dict[bool, list[torch.Tensor]] = {}
    for packed in (False, True):  # warm-up (allocator, kernels): one whole pass of each, not timed
        update_pass(model, batch, chunks[packed], packed)
    for r in range(1, args.repeats + 1):
        for packed in (False, True):
            logp, dt = update_pass(model, batch, chunks[packed], packed)
            print(f"  repeat {r}: {'packed' if packed else 'padded'} {dt:6.2f} s", flush=True)
            times[packed].append(dt)
            if r == 1:
                logps[packed] = logp
                grads[packed] = [p.grad.clone() for p in model.parameters()]
    med = {k: statistics.median(v) for k, v in times.items()}
    pairs = [b / a for a, b in zip(times[False], times[True])]  # each repeat's packed / padded
    best = {k: min(v) for k, v in times.items()}
    print()
    print(f"update pass (forward + backward, {args.repeats} interleaved repeats after a warm-up pass of each):")
    print(f"  padded  median {med[False]:6.2f} s  (best {best[False]:.2f})")
    print(f"  packed  median {med[True]:6.2f} s  (best {best[True]:.2f})")
    print(f"  packed / padded: {best[True] / best[False]:.2f}x best (the least disturbed by the neighbours' load), "
          f"{med[True] / med[False]:.2f}x median; per repeat {', '.join(f'{x:.2f}' for x in pairs)}")
    print(f"  real tokens per second (best): padded {real / best[False]:.0f}, packed {real / best[True]:.0f}")
    m = batch.completion_mask.bool()
    diff = (logps[True] - logps[False]).abs()[m].max()
    gmax = max(float(g.abs().max()) for g in grads[False])
    gdiff = max(float((a - b).abs().max()) for a, b in zip(grads[True], grads[False]))
    print(f"check: max |log-prob packed - padded| over the {int(m.sum())} completion tokens: {float(diff):.2e}; "
          f"max |grad difference| {gdiff:.2e} = {gdiff / gmax:.1e} x max |grad|; packed log-probs 0 off the mask: "
          f"{bool((logps[True][~m] == 0).all())}")

    if not args.no_rss:
        print()
        print("peak RSS, one update pass in a fresh process each (VmHWM reset before the pass):")
        fwd = [a for a in sys.argv[1:]]  # the same batch, model and split
        for layout in ("padded", "packed"):
            out = subprocess.run([sys.executable, __file__, "--worker", layout, *fwd], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"  {layout}: before {r['before'] / 1e6:.0f} MB, pass peak {r['pass_peak'] / 1e6:.0f} MB "
                  f"(+{(r['pass_peak'] - r['before']) / 1e6:.0f} MB)",
                  flush=True)


if __name__ == "__main__":
    main()
