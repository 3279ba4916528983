"""One policy update on a batch: old/ref log-probs, advantages, mu epochs of minibatches with
gradient accumulation. Only the algorithm core's functions do maths here; this file wires them."""

from __future__ import annotations

from collections import defaultdict

import torch

from grpo_kit.algorithms.losses import entropy_loss, truncated_is_weights, value_loss
from grpo_kit.train.algorithm import Algorithm
from grpo_kit.train.batch import Batch, forward_logprobs
from grpo_kit.train.config import TrainConfig


@torch.no_grad()
def _no_grad_in_micro_batches(fn, batch: Batch, micro: int) -> torch.Tensor:
    """``fn(sub_batch) -> [n, T]`` over the batch ``micro`` sequences at a time: ``[N, T]``."""
    dev = batch.input_ids.device
    return torch.cat([fn(batch.rows(torch.arange(s, min(s + micro, batch.size), device=dev)))
                      for s in range(0, batch.size, micro)])


def _logprobs_no_grad(model, batch: Batch, micro: int, cfg: TrainConfig, autocast: bool) -> torch.Tensor:
    return _no_grad_in_micro_batches(
        lambda sub: forward_logprobs(model, sub, temperature=cfg.sampling.temperature, autocast=autocast)[0],
        batch, micro)


def policy_update(model, ref_model, optimizer, scheduler, batch: Batch, cfg: TrainConfig, algorithm: Algorithm,
                  *, autocast: bool, beta: float, generator: torch.Generator, critic=None,
                  critic_optimizer=None) -> dict:
    """mu epochs over shuffled minibatches (policy and, with a critic, the value model stepped
    together); returns averaged metrics."""
    algo, N = cfg.algorithm, batch.size
    mb, micro = cfg.minibatch, cfg.micro_batch
    mask = algorithm.loss_mask(batch)
    need_old = algo.epochs > 1 or mb < N or (beta > 0 and algorithm.kl_in_reward)
    old_logp = _logprobs_no_grad(model, batch, micro, cfg, autocast) if need_old else None
    ref_logp = _logprobs_no_grad(ref_model, batch, micro, cfg, autocast) if beta > 0 else None
    old_values = (_no_grad_in_micro_batches(lambda sub: critic(sub, autocast), batch, micro)
                  if critic is not None else None)
    adv, returns, metrics = algorithm.advantages(batch, mask, old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                                                 old_values=old_values)
    value_data = (critic, old_values, returns) if critic is not None else None
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    model.train()
    for _ in range(algo.epochs):
        order = torch.randperm(N, generator=generator).to(batch.input_ids.device)
        for s in range(0, N, mb):
            rows = order[s:s + mb]
            norm_tok = mask[rows].sum().clamp(min=1)  # the minibatch's normalisers, for accumulation
            n_micro = -(-len(rows) // micro)
            for u in range(0, len(rows), micro):
                idx = rows[u:u + micro]
                m = _micro_step(model, batch, idx, adv, mask, old_logp, ref_logp, cfg, algorithm, autocast, beta,
                                num_tokens=norm_tok, num_seqs=len(rows), value_data=value_data)
                for k, v in m.items():  # losses add up over micro-batches; the rest is averaged
                    sums[k] += float(v) if k.startswith("loss/") else float(v) / n_micro
            for k in m:
                counts[k] += 1  # one per minibatch
            _optimizer_step(model, optimizer, scheduler, cfg, sums, counts, "grad_norm")
            if critic is not None:
                _optimizer_step(critic, critic_optimizer, None, cfg, sums, counts, "value/grad_norm")
    metrics.update({k: sums[k] / counts[k] for k in sums})
    metrics["lr"] = scheduler.get_last_lr()[0]
    return metrics


def _optimizer_step(module, optimizer, scheduler, cfg: TrainConfig, sums, counts, key: str) -> None:
    if cfg.optim.grad_clip is not None:
        sums[key] += float(torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip))
        counts[key] += 1
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _micro_step(model, batch, idx, adv, mask, old_logp, ref_logp, cfg: TrainConfig, algorithm: Algorithm,
                autocast, beta, *, num_tokens, num_seqs, value_data=None) -> dict:
    algo = cfg.algorithm
    sub = batch.rows(idx)
    logp, ent = forward_logprobs(model, sub, temperature=cfg.sampling.temperature, autocast=autocast,
                                 with_entropy=True, entropy_grad=algo.entropy_coef > 0)
    m = mask[idx]
    old = old_logp[idx] if old_logp is not None else logp.detach()
    is_w = None
    if algo.tis_cap is not None:
        if sub.sampler_logp is None:
            raise RuntimeError("algorithm.tis_cap needs the sampler's log-probs; this sampler gave none")
        is_w = truncated_is_weights(old, sub.sampler_logp, algo.tis_cap)
    agg = algorithm.agg(num_tokens, num_seqs)
    loss, metrics = algorithm.policy_loss(logp, old, adv[idx], m, is_weights=is_w, agg=agg)
    metrics = {f"policy/{k}": v for k, v in metrics.items()}
    metrics["loss/policy"] = loss.detach()
    if ref_logp is not None:
        kl_term, kl_metrics = algorithm.kl_term(logp, ref_logp[idx], m, beta=beta, agg=agg)
        metrics.update(kl_metrics)
        if kl_term is not None:
            loss = loss + kl_term
    if algo.entropy_coef > 0:
        loss = loss + algo.entropy_coef * entropy_loss(ent, m, **agg)
    metrics["entropy"] = (ent.detach() * m).sum() / m.sum().clamp(min=1)
    if value_data is not None:  # the critic's clipped loss; its own parameters and optimizer
        critic, old_values, returns = value_data
        vloss, vm = value_loss(critic(sub, autocast), old_values[idx], returns[idx], m,
                               clip=algo.value.clip, **agg)
        loss = loss + vloss
        metrics["loss/value"] = vloss.detach()
        metrics.update({f"value/{k}": v for k, v in vm.items()})
    metrics["loss/total"] = loss.detach()
    loss.backward()
    return metrics
