"""One policy update on a batch: old/ref log-probs, advantages, mu epochs of minibatches with
gradient accumulation. Only the algorithm core's functions do maths here; this file wires them.

Under data parallelism each rank holds a share of the step's sequences (whole groups, at the
global row ``positions``), and the update is the single-process one over the whole batch:

- advantages are computed from the whole batch's rewards, masks (and values or log-probs where
  the estimator needs them), gathered from every rank, so group, batch-std and whitening
  statistics span the batch;
- every rank draws the same permutation of the global rows; a minibatch is a slice of it, and
  each rank runs its own rows of that slice in micro-batches, normalised by the minibatch's global
  token and sequence counts; FSDP sums the gradients over the ranks;
- a rank with fewer rows in a minibatch runs empty micro-batches (a loss of exactly zero) so that
  every rank makes the same forward and backward calls (each one gathers sharded parameters);
- metrics are reduced over the ranks: losses summed, means weighted by tokens, extremes by
  min/max.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import torch

from grpo_kit.algorithms.losses import entropy_loss, truncated_is_weights, value_loss
from grpo_kit.dist import World
from grpo_kit.train.algorithm import Algorithm
from grpo_kit.train.batch import Batch, forward_logprobs
from grpo_kit.train.config import TrainConfig

_PER_SEQUENCE = {"kl/sequence"}  # metrics averaged over sequences, not tokens
_NORMS = ("grad_norm", "value/grad_norm")  # the same on every rank after clipping


def _chunks(rows: torch.Tensor, micro: int, world: World) -> list[torch.Tensor | None]:
    """``rows`` in micro-batches of ``micro``, padded with ``None`` (an empty micro-batch) to the
    largest count of any rank."""
    out: list[torch.Tensor | None] = [rows[u:u + micro] for u in range(0, len(rows), micro)]
    most = int(world.max(torch.tensor(len(out))))
    return out + [None] * (most - len(out))


@torch.no_grad()
def _no_grad_in_micro_batches(fn, batch: Batch, micro: int, world: World = World()) -> torch.Tensor:
    """``fn(sub_batch) -> [n, T]`` over the batch ``micro`` sequences at a time: ``[N, T]``."""
    dev = batch.input_ids.device
    parts = []
    for idx in _chunks(torch.arange(batch.size, device=dev), micro, world):
        out = fn(batch.rows(idx if idx is not None else torch.zeros(1, dtype=torch.long, device=dev)))
        if idx is not None:  # an empty micro-batch only keeps the ranks in step
            parts.append(out)
    return torch.cat(parts)


def _logprobs_no_grad(model, batch: Batch, micro: int, cfg: TrainConfig, autocast: bool,
                      world: World = World()) -> torch.Tensor:
    return _no_grad_in_micro_batches(
        lambda sub: forward_logprobs(model, sub, temperature=cfg.sampling.temperature, autocast=autocast)[0],
        batch, micro, world)


def _global_advantages(algorithm: Algorithm, batch: Batch, mask, positions, total: int, world: World, G: int,
                       **tensors):
    """``algorithm.advantages`` over the whole batch, gathered from every rank; this rank's rows."""
    if world.size == 1:
        return algorithm.advantages(batch, mask, **tensors)
    T = mask.shape[1]
    groups = positions[::G] // G
    rewards = world.gather_rows(batch.rewards, groups, total // G)  # [B, G]
    full = {k: (None if v is None else world.gather_rows(v, positions, total)) for k, v in tensors.items()
            if k != "beta"}
    adv, returns, metrics = algorithm.advantages(SimpleNamespace(rewards=rewards),
                                                 world.gather_rows(mask, positions, total), beta=tensors["beta"],
                                                 **full)
    mine = lambda t: None if t is None else t[positions, :T]  # noqa: E731
    return mine(adv), mine(returns), metrics


def policy_update(model, ref_model, optimizer, scheduler, batch: Batch, cfg: TrainConfig, algorithm: Algorithm,
                  *, autocast: bool, beta: float, generator: torch.Generator, critic=None,
                  critic_optimizer=None, world: World = World(), positions: torch.Tensor | None = None,
                  total: int | None = None) -> dict:
    """mu epochs over shuffled minibatches (policy and, with a critic, the value model stepped
    together); returns averaged metrics. ``positions``: the global rows of this rank's sequences
    (default ``0 .. N-1``), of ``total`` in the step (default N); see the module docstring."""
    algo, dev = cfg.algorithm, batch.input_ids.device
    positions = torch.arange(batch.size, device=dev) if positions is None else positions.to(dev)
    total = batch.size if total is None else total
    mb, micro = cfg.minibatch, cfg.micro_batch
    mask = algorithm.loss_mask(batch)
    need_old = algo.epochs > 1 or mb < total or (beta > 0 and algorithm.kl_in_reward)
    old_logp = _logprobs_no_grad(model, batch, micro, cfg, autocast, world) if need_old else None
    ref_logp = _logprobs_no_grad(ref_model, batch, micro, cfg, autocast, world) if beta > 0 else None
    old_values = (_no_grad_in_micro_batches(lambda sub: critic(sub, autocast), batch, micro, world)
                  if critic is not None else None)
    adv, returns, metrics = _global_advantages(algorithm, batch, mask, positions, total, world, cfg.sampling.n,
                                               old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                                               old_values=old_values)
    value_data = (critic, old_values, returns) if critic is not None else None
    acc = _Metrics()
    local_of = torch.full((total,), -1, dtype=torch.long)
    local_of[positions.cpu()] = torch.arange(batch.size)
    model.train()
    for _ in range(algo.epochs):
        order = torch.randperm(total, generator=generator)
        for s in range(0, total, mb):
            rows = local_of[order[s:s + mb]]
            rows = rows[rows >= 0].to(dev)  # this rank's rows of the minibatch
            norm_tok = world.sum(mask[rows].sum()).clamp(min=1)  # the minibatch's normalisers
            n_seqs = min(mb, total - s)
            for idx in _chunks(rows, micro, world):
                acc.add(_micro_step(model, batch, idx, adv, mask, old_logp, ref_logp, cfg, algorithm, autocast,
                                    beta, num_tokens=norm_tok, num_seqs=n_seqs, value_data=value_data))
            acc.minibatches += 1
            acc.norm("grad_norm", _optimizer_step(model, optimizer, scheduler, cfg))
            if critic is not None:
                acc.norm("value/grad_norm", _optimizer_step(critic, critic_optimizer, None, cfg))
    metrics.update(acc.result(world))
    metrics["lr"] = scheduler.get_last_lr()[0]
    return metrics


class _Metrics:
    """Micro-batch metrics -> step metrics: ``loss/*`` summed within a minibatch and averaged over
    minibatches; ``*_min`` / ``*_max`` extremes; the rest averaged over tokens (``kl/sequence``
    over sequences). :meth:`result` reduces them over the ranks."""

    def __init__(self):
        self.loss: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self.weighted: dict[str, list] = {}
        self.extreme: dict[str, float] = {}
        self.norms: dict[str, list[float]] = defaultdict(list)
        self.minibatches = 0

    def add(self, m: dict) -> None:
        w_tok, w_seq = float(m.pop("_tokens")), float(m.pop("_sequences"))
        for k, v in m.items():
            v = float(v)
            if k.startswith("loss/"):
                self.loss[k] += v
            elif k.endswith(("_min", "_max")):
                if w_tok > 0:
                    pick = min if k.endswith("_min") else max
                    self.extreme[k] = pick(self.extreme.get(k, v), v)
                else:
                    self.extreme.setdefault(k, float("inf") if k.endswith("_min") else -float("inf"))
            else:
                w = w_seq if k in _PER_SEQUENCE else w_tok
                s = self.weighted.setdefault(k, [0.0, 0.0])
                s[0] += v * w
                s[1] += w

    def norm(self, key: str, value: float | None) -> None:
        if value is not None:
            self.norms[key].append(value)

    def result(self, world: World) -> dict[str, float]:
        out: dict[str, float] = {}
        keys = sorted(self.loss)
        if keys:
            sums = world.sum(torch.stack([self.loss[k] for k in keys]))
            out |= {k: float(v) / max(1, self.minibatches) for k, v in zip(keys, sums)}
        keys = sorted(self.weighted)
        if keys:
            sums = world.sum(torch.tensor([self.weighted[k] for k in keys], dtype=torch.float64))  # [K, 2]
            out |= {k: float(s / w) if w > 0 else 0.0 for k, (s, w) in zip(keys, sums.tolist())}
        for suffix, reduce in (("_min", world.min), ("_max", world.max)):
            keys = sorted(k for k in self.extreme if k.endswith(suffix))
            if keys:
                vals = reduce(torch.tensor([self.extreme[k] for k in keys], dtype=torch.float64))
                out |= {k: v if abs(v) != float("inf") else 1.0 for k, v in zip(keys, vals.tolist())}
        out |= {k: sum(v) / len(v) for k, v in self.norms.items()}
        return out


def _optimizer_step(module, optimizer, scheduler, cfg: TrainConfig) -> float | None:
    """Clip (the global norm, over every rank's shards), step, zero; the norm before clipping."""
    norm = None
    if cfg.optim.grad_clip is not None:
        total = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
        norm = float(total.full_tensor() if hasattr(total, "full_tensor") else total)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def _micro_step(model, batch, idx, adv, mask, old_logp, ref_logp, cfg: TrainConfig, algorithm: Algorithm,
                autocast, beta, *, num_tokens, num_seqs, value_data=None) -> dict:
    """Forward and backward of the rows ``idx``; ``None``: an empty micro-batch (row 0 with no
    token in the loss: the same calls, a loss and gradient of exactly zero)."""
    algo = cfg.algorithm
    empty = idx is None
    if empty:
        idx = torch.zeros(1, dtype=torch.long, device=batch.input_ids.device)
    sub = batch.rows(idx)
    logp, ent = forward_logprobs(model, sub, temperature=cfg.sampling.temperature, autocast=autocast,
                                 with_entropy=True, entropy_grad=algo.entropy_coef > 0)
    m = mask[idx] * (0.0 if empty else 1.0)
    a = adv[idx] * m  # finite where m is 0
    old = old_logp[idx] if old_logp is not None else logp.detach()
    is_w = None
    if algo.tis_cap is not None:
        if sub.sampler_logp is None:
            raise RuntimeError("algorithm.tis_cap needs the sampler's log-probs; this sampler gave none")
        is_w = truncated_is_weights(old, sub.sampler_logp, algo.tis_cap)
    agg = algorithm.agg(num_tokens, num_seqs)
    loss, metrics = algorithm.policy_loss(logp, old, a, m, is_weights=is_w, agg=agg)
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
    metrics["_tokens"] = m.sum()
    metrics["_sequences"] = (m.sum(-1) > 0).sum()
    return metrics
