"""R1-Zero style GRPO in one top-to-bottom file, from the library's pieces.

    python scripts/train_r1_zero.py --model Qwen/Qwen2.5-0.5B --task gsm8k --steps 200 --out runs/r1z
    python scripts/train_r1_zero.py --model Qwen/Qwen2.5-0.5B --sampler vllm --out runs/r1z-vllm   # GPU

The same loop as `grpo-kit train` without its config system, checkpoints or dynamic sampling: per
step, sample B prompts x G completions, score them (rewards in worker processes under a hard
timeout), group-normalised advantages (GRPO, arXiv 2402.03300), one token-mean clipped policy-loss
step (DAPO's aggregation), optional k3 KL to the frozen start model. Departures from the paper:
token-mean aggregation instead of sequence-mean, and no KL by default (as Dr. GRPO and DAPO).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from grpo_kit.algorithms.advantages import group_advantages
from grpo_kit.algorithms.losses import aggregate, kl_penalty, policy_loss
from grpo_kit.config import ScoringConfig
from grpo_kit.rollout import SamplingConfig, make_sampler
from grpo_kit.rollout.vllm import VLLMConfig
from grpo_kit.scoring import Scorer
from grpo_kit.train.batch import forward_logprobs, make_batch
from grpo_kit.train.config import ModelConfig
from grpo_kit.train.models import encode_prompt, load_policy
from tasks import get_task
from tasks.config import TaskConfig


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="local path or hub id of a causal LM")
    p.add_argument("--task", default="gsm8k", help="a built-in task: gsm8k, math, countdown, arithmetic")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--prompts", type=int, default=16, help="B: prompts per step")
    p.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--beta", type=float, default=0.0, help="k3 KL coefficient (0: no reference model)")
    p.add_argument("--clip-low", type=float, default=0.2)
    p.add_argument("--clip-high", type=float, default=0.28, help="DAPO clip-higher")
    p.add_argument("--micro-batch", type=int, default=16, help="sequences per forward/backward")
    p.add_argument("--sampler", choices=["hf", "vllm"], default="hf",
                   help="hf: transformers generate; vllm: a colocated vLLM engine, weights synced each step")
    p.add_argument("--vllm-memory", type=float, default=None,
                   help="vllm: gpu_memory_utilization, the GPU's share (default 0.3 on a GPU)")
    p.add_argument("--vllm-kv-cache", default=None,
                   help="vllm: kv_cache_memory_bytes, e.g. 512MiB (default on a CPU: sized for the model)")
    p.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs (faster start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/r1-zero", help="folder for metrics.jsonl and the final model")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- models
    model, tok, device, autocast = load_policy(ModelConfig(path=args.model))
    ref = copy.deepcopy(model).eval().requires_grad_(False) if args.beta > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)

    # ----------------------------------------------------------------- data, rewards, sampler
    task = get_task(TaskConfig(name=args.task))
    data = task.load("train")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed)).tolist()
    sampling = SamplingConfig(n=args.group, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    engine = VLLMConfig(gpu_memory_utilization=args.vllm_memory, kv_cache_memory_bytes=args.vllm_kv_cache,
                        enforce_eager=args.enforce_eager)
    sampler = make_sampler(args.sampler, model, tok, sampling, logprobs=False, model_path=args.model, engine=engine)
    scorer = Scorer(task.default_rewards, ScoringConfig(workers=2, timeout=5.0))
    log = open(out / "metrics.jsonl", "w")

    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        # ------------------------------------------------------------- sample
        rows = [data[order[(step * args.prompts + i) % len(data)]] for i in range(args.prompts)]
        rb = sampler.sample([encode_prompt(tok, r["prompt"]) for r in rows], seed=args.seed * 100_003 + step)
        rb = rb.with_prompts([r["prompt"] for r in rows], {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"})

        # ------------------------------------------------------------- score
        scorer.score_batch(rb)  # fills rb.rewards, rb.reward_errors and rb.reward (the weighted sum)
        batch = make_batch(rb, tok.pad_token_id, device)

        # ------------------------------------------------------------- advantages
        adv = group_advantages(batch.rewards).reshape(-1)  # [B*G], 0 for a group with equal rewards
        mask = (batch.completion_mask * ~batch.rewards.reshape(-1, 1).isnan()).float()  # [B*G, T]; no reward: no loss
        n_tok = mask.sum().clamp(min=1)

        # ------------------------------------------------------------- loss and step
        model.train()
        for s in range(0, batch.size, args.micro_batch):
            idx = torch.arange(s, min(s + args.micro_batch, batch.size), device=device)
            sub = batch.rows(idx)
            logp, _ = forward_logprobs(model, sub, temperature=args.temperature, autocast=autocast)
            loss, stats = policy_loss(logp, logp.detach(), adv[idx], mask[idx], clip_low=args.clip_low,
                                      clip_high=args.clip_high, agg="token_mean", num_tokens=n_tok)
            if ref is not None:
                with torch.no_grad():
                    ref_logp, _ = forward_logprobs(ref, sub, temperature=args.temperature, autocast=autocast)
                kl = kl_penalty(logp, ref_logp, "k3")  # [n, T]
                loss = loss + args.beta * aggregate(kl, mask[idx], "token_mean", num_tokens=n_tok)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sampler.sync_weights(model)

        # ------------------------------------------------------------- log
        vals = [r for r in rb.reward if r is not None]
        row = {"step": step, "reward/mean": sum(vals) / max(1, len(vals)),
               "completion/length_mean": float(mask.sum(-1).mean()), "time/step": time.perf_counter() - t0}
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(f"step {step}: reward {row['reward/mean']:.3f}, {row['time/step']:.2f} s", flush=True)

    scorer.close()
    log.close()
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")


if __name__ == "__main__":
    main()
