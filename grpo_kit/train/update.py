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

import weakref
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from grpo_kit.algorithms.losses import entropy_loss, rollout_correction, value_loss
from grpo_kit.dist import World
from grpo_kit.train.algorithm import Algorithm
from grpo_kit.train.batch import Batch, forward_logprobs
from grpo_kit.train.config import TrainConfig

_PER_SEQUENCE = {"kl/sequence"}  # metrics averaged over sequences, not tokens


@dataclass
class Layout:
    """Where the step's sequences are: ``owner[j]`` is the rank that holds global row j (whole
    groups, in row order); ``whole`` is the masks and rewards of every row (``completion_mask``
    ``[total, T]``, ``rewards`` ``[B, G]``, ``truncated``), which every rank has from the gathered
    record. A single process: :meth:`single`."""

    owner: torch.Tensor  # [total] long
    rank: int
    whole: Any

    @classmethod
    def single(cls, batch: Batch) -> "Layout":
        return cls(torch.zeros(batch.size, dtype=torch.long), 0, batch)

    @property
    def total(self) -> int:
        return len(self.owner)

    @property
    def positions(self) -> torch.Tensor:
        """This rank's global rows, in the order of its local batch."""
        return (self.owner == self.rank).nonzero().squeeze(1)

    def most_chunks(self, rows: torch.Tensor, micro: int, budget: int | None = None) -> int:
        """The most micro-batches any rank needs for its part of the global ``rows`` (see
        :func:`_split`; every rank can count every rank's, from the whole step's lengths)."""
        lengths = self.whole.lengths.cpu()
        return max(len(_split(rows[self.owner[rows] == r], micro, budget, lengths))
                   for r in range(int(self.owner.max()) + 1))


def _split(rows: torch.Tensor, micro: int, budget: int | None, lengths: torch.Tensor) -> list[torch.Tensor]:
    """``rows`` in order, in micro-batches of at most ``micro`` rows and, with a token ``budget``, at
    most ``budget`` tokens (``lengths[row]`` each: prompt + completion; a longer row goes alone)."""
    if budget is None:
        return [rows[u:u + micro] for u in range(0, len(rows), micro)]
    out: list[list[int]] = []
    tokens = 0
    for r, n in zip(rows.tolist(), lengths[rows.cpu()].tolist()):
        if not out or len(out[-1]) == micro or tokens + n > budget:
            out.append([])
            tokens = 0
        out[-1].append(r)
        tokens += n
    return [torch.tensor(c, dtype=torch.long, device=rows.device) for c in out]


def _chunks(rows: torch.Tensor, micro: int, most: int, budget: int | None = None,
            lengths: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """``rows`` in micro-batches (:func:`_split`), padded with ``None`` (an empty micro-batch) to
    ``most``, the count of the rank with the most."""
    out: list[torch.Tensor | None] = list(_split(rows, micro, budget, lengths))
    return out + [None] * (most - len(out))


@torch.no_grad()
def _no_grad_in_micro_batches(fn, batch: Batch, micro: int, layout: Layout | None = None,
                              budget: int | None = None) -> torch.Tensor:
    """``fn(sub_batch) -> [n, T]`` over the batch in micro-batches (``micro`` sequences, ``budget``
    tokens at most): ``[N, T]``."""
    dev = batch.input_ids.device
    layout = layout or Layout.single(batch)
    parts = []
    most = layout.most_chunks(torch.arange(layout.total), micro, budget)
    for idx in _chunks(torch.arange(batch.size, device=dev), micro, most, budget, batch.lengths.cpu()):
        out = fn(batch.rows(idx if idx is not None else torch.zeros(1, dtype=torch.long, device=dev)))
        if idx is not None:  # an empty micro-batch only keeps the ranks in step
            parts.append(out)
    return torch.cat(parts)


def _forward_options(cfg: TrainConfig) -> dict:
    """The run's settings of :func:`forward_logprobs`, the same for every call of the update
    (``shared_prefix``: only a resolved ``true``; the trainer resolves ``auto``)."""
    return {"temperature": cfg.sampling.temperature, "packed": cfg.train.packing,
            "shared_prefix": cfg.train.shared_prefix is True, "fused": cfg.train.logprobs == "fused"}


def _logprobs_no_grad(model, batch: Batch, micro: int, cfg: TrainConfig, autocast: bool,
                      layout: Layout | None = None) -> torch.Tensor:
    return _no_grad_in_micro_batches(
        lambda sub: forward_logprobs(model, sub, autocast=autocast, **_forward_options(cfg))[0],
        batch, micro, layout, cfg.train.micro_batch_tokens)


def _logprobs_entropy_no_grad(model, batch: Batch, micro: int, cfg: TrainConfig, autocast: bool,
                              layout: Layout | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, entropy)``, each ``[N, T]``, in one pass (``top_entropy_quantile`` needs both)."""
    both = _no_grad_in_micro_batches(
        lambda sub: torch.stack(forward_logprobs(model, sub, autocast=autocast, with_entropy=True,
                                                 **_forward_options(cfg)), -1),
        batch, micro, layout, cfg.train.micro_batch_tokens)  # [N, T, 2]
    return both[..., 0], both[..., 1]


# --------------------------------------------------------------------------- fp16 (model.precision)
# Written against torch.amp (GradScaler("cuda"), autocast fp16); not run here: no GPU (README).

_SCALERS: "weakref.WeakKeyDictionary[Any, torch.amp.GradScaler]" = weakref.WeakKeyDictionary()


def _fp16(cfg: TrainConfig, autocast: bool) -> bool:
    return autocast and cfg.model.precision == "fp16"


def _amp(cfg: TrainConfig, autocast: bool):
    """The update's autocast: fp16 here under ``model.precision: fp16`` (the forward helpers are then
    told ``autocast=False``, their own context being bf16); nothing otherwise."""
    return torch.autocast("cuda", dtype=torch.float16) if _fp16(cfg, autocast) else nullcontext()


def _grad_scaler(optimizer, cfg: TrainConfig, autocast: bool, world: World) -> torch.amp.GradScaler | None:
    """The dynamic loss scaler of the policy's optimizer (one per optimizer, kept across steps)."""
    if not _fp16(cfg, autocast):
        return None
    if world.size > 1:
        raise RuntimeError("model.precision: fp16 runs in one process for now (FSDP2's bf16 mixed precision "
                           "and its gradient reduction are not set up for fp16); use bf16 under torchrun")
    if optimizer not in _SCALERS:
        _SCALERS[optimizer] = torch.amp.GradScaler("cuda")
    return _SCALERS[optimizer]


def _step_policy_tokens(algorithm: Algorithm, layout: Layout, world: World, whole_mask, adv, old_logp,
                        entropy, generator) -> tuple[torch.Tensor | None, dict, dict]:
    """:meth:`Algorithm.policy_tokens` over every rank's rows (gathered), this rank's rows back."""
    if not algorithm.needs_step_logprobs:
        return None, {}, {}
    if world.size == 1:
        return algorithm.policy_tokens(whole_mask, old_logp=old_logp, entropy=entropy, adv=adv,
                                       generator=generator)
    dev, width = adv.device, whole_mask.shape[1]
    full = [None if t is None else _gather_rows(t, layout, world, width) for t in (adv, old_logp, entropy)]
    keep, per_token, metrics = algorithm.policy_tokens(whole_mask.to(dev), old_logp=full[1], entropy=full[2],
                                                       adv=full[0], generator=generator)
    T, rows = adv.shape[1], layout.positions.to(dev)
    mine = lambda t: None if t is None else t.to(dev)[rows, :T]  # noqa: E731
    return mine(keep), {k: mine(v) for k, v in per_token.items()}, metrics


def _gather_rows(t: torch.Tensor, layout: Layout, world: World, width: int) -> torch.Tensor:
    """``[total, width]``: every rank's rows of ``t`` at their global positions (zero-padded)."""
    rows = int(torch.bincount(layout.owner).max())
    pad = t.new_zeros((rows, width))
    pad[:t.shape[0], :t.shape[1]] = t
    out = t.new_zeros((layout.total, width))
    for r, part in enumerate(world.all_gather(pad)):
        mine = (layout.owner == r).nonzero().squeeze(1)
        out[mine.to(t.device)] = part[:len(mine)]
    return out


def _global_advantages(algorithm: Algorithm, batch: Batch, layout: Layout, world: World, mask, *, beta: float,
                       old_logp, ref_logp, old_values):
    """``algorithm.advantages`` over the whole batch (``mask``: the loss mask of every row, from
    ``layout.whole``); this rank's rows. The tensors that take a forward pass (values, and the
    log-probs when the KL is in the reward) are gathered from every rank."""
    per_token = {"old_logp": old_logp, "ref_logp": ref_logp} if beta > 0 and algorithm.kl_in_reward else {}
    per_token["old_values"] = old_values
    if world.size == 1:
        return algorithm.advantages(batch, mask, beta=beta, **per_token)
    dev, width = batch.input_ids.device, mask.shape[1]
    full = {k: None if v is None else _gather_rows(v, layout, world, width) for k, v in per_token.items()}
    adv, returns, metrics = algorithm.advantages(layout.whole, mask.to(dev), beta=beta, **full)
    T, rows = batch.completion_ids.shape[1], layout.positions.to(dev)
    mine = lambda t: None if t is None else t.to(dev)[rows, :T]  # noqa: E731
    return mine(adv), mine(returns), metrics


def policy_update(model, ref_model, optimizer, scheduler, batch: Batch, cfg: TrainConfig, algorithm: Algorithm,
                  *, autocast: bool, beta: float, generator: torch.Generator, critic=None,
                  critic_optimizer=None, world: World = World(), layout: Layout | None = None) -> dict:
    """mu epochs over shuffled minibatches (policy and, with a critic, the value model stepped
    together); returns averaged metrics. ``layout``: where the step's rows are under data
    parallelism (default: all here); see the module docstring."""
    algo, dev = cfg.algorithm, batch.input_ids.device
    layout = layout or Layout.single(batch)
    total, mb, micro = layout.total, cfg.minibatch, cfg.micro_batch
    mask = algorithm.loss_mask(batch)  # [N, T] this rank's rows
    whole_mask = mask if layout.whole is batch else algorithm.loss_mask(layout.whole)  # [total, T_max]
    whole_tokens = whole_mask.sum(-1).cpu()  # tokens in the loss per row
    need_old = (algo.epochs > 1 or mb < total or (beta > 0 and algorithm.kl_in_reward)
                or algorithm.needs_step_logprobs)
    scaler = _grad_scaler(optimizer, cfg, autocast, world)
    amp, autocast = _amp(cfg, autocast), autocast and not _fp16(cfg, autocast)
    old_entropy = None
    with amp:
        if algorithm.needs_step_entropy:
            old_logp, old_entropy = _logprobs_entropy_no_grad(model, batch, micro, cfg, autocast, layout)
        else:
            old_logp = _logprobs_no_grad(model, batch, micro, cfg, autocast, layout) if need_old else None
        ref_logp = None
        if beta > 0 and batch.ref_logp is not None:  # computed beside the sampler (train.ref_in_rollout)
            ref_logp = batch.ref_logp
        elif beta > 0:
            if ref_model is None:
                raise RuntimeError("the KL needs the reference log-probs, and neither the record has them "
                                   "(train.ref_in_rollout) nor the trainer holds a reference model")
            ref_logp = _logprobs_no_grad(ref_model, batch, micro, cfg, autocast, layout)
        old_values = (_no_grad_in_micro_batches(lambda sub: critic(sub, autocast), batch, micro, layout,
                                                cfg.train.micro_batch_tokens) if critic is not None else None)
    adv, returns, metrics = _global_advantages(algorithm, batch, layout, world, whole_mask, beta=beta,
                                               old_logp=old_logp, ref_logp=ref_logp, old_values=old_values)
    # the tokens that carry policy gradient, chosen over the whole step (top_entropy_quantile, Clip-Cov)
    keep, per_token, chosen = _step_policy_tokens(algorithm, layout, world, whole_mask, adv, old_logp,
                                                  old_entropy, generator)
    metrics.update(chosen)
    whole_keep = None
    if keep is not None:  # the policy loss's normaliser counts the kept tokens
        whole_keep = keep if layout.whole is batch else _gather_rows(keep, layout, world, whole_mask.shape[1])
        whole_keep = whole_keep.sum(-1).cpu()
    value_data = (critic, old_values, returns) if critic is not None else None
    acc = _Metrics()
    lengths = batch.lengths.cpu()  # [n] prompt + completion tokens of this rank's rows
    local_of = torch.full((total,), -1, dtype=torch.long)
    local_of[layout.positions] = torch.arange(batch.size)
    model.train()
    for _ in range(algo.epochs):
        order = torch.randperm(total, generator=generator)
        for s in range(0, total, mb):
            glob = order[s:s + mb]
            if cfg.train.shared_prefix is True:  # a group's rows side by side, so micro-batches share their prompt
                glob = glob.sort().values  # (the same minibatch: the same update)
            rows = local_of[glob]
            rows = rows[rows >= 0].to(dev)  # this rank's rows of the minibatch
            norm_tok = whole_tokens[glob].sum().clamp(min=1).to(dev)  # the minibatch's normalisers
            policy_tok = norm_tok if whole_keep is None else whole_keep[glob].sum().clamp(min=1).to(dev)
            budget = cfg.train.micro_batch_tokens
            for idx in _chunks(rows, micro, layout.most_chunks(glob, micro, budget), budget, lengths):
                with amp:
                    acc.add(_micro_step(model, batch, idx, adv, mask, old_logp, ref_logp, cfg, algorithm,
                                        autocast, beta, num_tokens=norm_tok, num_seqs=len(glob),
                                        value_data=value_data, keep=keep, per_token=per_token,
                                        policy_tokens=policy_tok, scaler=scaler))
            acc.minibatches += 1
            acc.norm("grad_norm", _optimizer_step(model, optimizer, scheduler, cfg, scaler))
            if critic is not None:
                acc.norm("value/grad_norm", _optimizer_step(critic, critic_optimizer, None, cfg, scaler))
            if scaler is not None:  # once per iteration, after every optimizer's step
                scaler.update()
    metrics.update(acc.result(world))
    metrics["lr"] = scheduler.get_last_lr()[0]
    return metrics


class _Metrics:
    """Micro-batch metrics -> step metrics: ``loss/*`` summed within a minibatch and averaged over
    minibatches; ``*_min`` / ``*_max`` extremes; the rest averaged over tokens (``policy/*`` over
    the policy loss's tokens, ``kl/sequence`` over sequences). :meth:`result` reduces them over
    the ranks."""

    def __init__(self):
        self.loss: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self.weighted: dict[str, list] = {}
        self.extreme: dict[str, float] = {}
        self.norms: dict[str, list[float]] = defaultdict(list)
        self.minibatches = 0

    def add(self, m: dict) -> None:
        w_tok, w_seq = float(m.pop("_tokens")), float(m.pop("_sequences"))
        w_pol = float(m.pop("_policy_tokens", w_tok))  # the policy loss's tokens (top_entropy_quantile)
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
                w = w_seq if k in _PER_SEQUENCE else w_pol if k.startswith("policy/") else w_tok
                s = self.weighted.setdefault(k, [0.0, 0.0])
                s[0] += v * w
                s[1] += w

    def norm(self, key: str, value: float | None) -> None:
        if value is not None:
            self.norms[key].append(value)

    def result(self, world: World) -> dict[str, float]:
        """The step's metrics over every rank, from one all-gather of this rank's sums."""
        loss, weighted = sorted(self.loss), sorted(self.weighted)
        extreme = sorted(self.extreme)
        local = torch.tensor([float(self.loss[k]) for k in loss] + [v for k in weighted for v in self.weighted[k]]
                             + [self.extreme[k] for k in extreme], dtype=torch.float64)
        ranks = torch.stack(world.all_gather(local))  # [ranks, K]
        sums, out = ranks.sum(0).tolist(), {}
        out |= {k: sums[i] / max(1, self.minibatches) for i, k in enumerate(loss)}
        o = len(loss)
        for i, k in enumerate(weighted):
            s, w = sums[o + 2 * i], sums[o + 2 * i + 1]
            out[k] = s / w if w > 0 else 0.0
        o += 2 * len(weighted)
        for i, k in enumerate(extreme):
            col = ranks[:, o + i]
            v = float(col.min() if k.endswith("_min") else col.max())
            out[k] = v if abs(v) != float("inf") else 1.0  # no token anywhere: the neutral ratio
        out |= {k: sum(v) / len(v) for k, v in self.norms.items()}
        return out


def _optimizer_step(module, optimizer, scheduler, cfg: TrainConfig, scaler=None) -> float | None:
    """Clip (the global norm, over every rank's shards), step, zero; the norm before clipping. With
    a loss ``scaler`` (fp16) the gradients are unscaled first and a step with inf/NaN is skipped."""
    norm = None
    if scaler is not None:
        scaler.unscale_(optimizer)
    if cfg.optim.grad_clip is not None:
        total = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
        norm = float(total.full_tensor() if hasattr(total, "full_tensor") else total)
    if scaler is not None:
        scaler.step(optimizer)
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def _micro_step(model, batch, idx, adv, mask, old_logp, ref_logp, cfg: TrainConfig, algorithm: Algorithm,
                autocast, beta, *, num_tokens, num_seqs, value_data=None, keep=None, per_token=None,
                policy_tokens=None, scaler=None) -> dict:
    """Forward and backward of the rows ``idx``; ``None``: an empty micro-batch (row 0 with no
    token in the loss: the same calls, a loss and gradient of exactly zero). ``keep``: the step's
    tokens that carry policy gradient (``[N, T]``, None: all of ``mask``), ``policy_tokens`` the
    minibatch's count of them; ``per_token``: the step's tensors the policy loss takes per row."""
    algo = cfg.algorithm
    empty = idx is None
    if empty:
        idx = torch.zeros(1, dtype=torch.long, device=batch.input_ids.device)
    sub = batch.rows(idx)
    logp, ent = forward_logprobs(model, sub, autocast=autocast, with_entropy=True,
                                 entropy_grad=algo.entropy_coef > 0, **_forward_options(cfg))
    m = mask[idx] * (0.0 if empty else 1.0)
    a = adv[idx] * m  # finite where m is 0
    old = old_logp[idx] if old_logp is not None else logp.detach()
    is_w = None
    metrics: dict = {}
    if sub.sampler_logp is not None:  # how far the sampler's distribution is from the trainer's
        metrics["rollout/logprob_abs_diff"] = ((old - sub.sampler_logp).abs() * m).sum() / m.sum().clamp(min=1)
        # the trainer's log-probs are the proximal policy, the sampler's the behaviour policy
        is_w, rc = rollout_correction(old, sub.sampler_logp, m, **algorithm.correction)
        metrics.update({f"rollout/{k}": v for k, v in rc.items()})
    elif algorithm.needs_sampler_logprobs:
        raise RuntimeError("algorithm.tis_cap / seq_mask_band / token_mask_band need the sampler's log-probs; "
                           "this sampler gave none")
    agg = algorithm.agg(num_tokens, num_seqs)
    pm_a, pm_mask, pm_agg = a, m, agg
    if keep is not None:
        pm_mask, pm_agg = m * keep[idx], algorithm.agg(policy_tokens, num_seqs)
        pm_a = a * pm_mask
    loss, pm = algorithm.policy_loss(logp, old, pm_a, pm_mask, is_weights=is_w, agg=pm_agg,
                                     per_token={k: v[idx] for k, v in (per_token or {}).items()})
    metrics.update({f"policy/{k}": v for k, v in pm.items()})
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
    (loss if scaler is None else scaler.scale(loss)).backward()
    metrics["_tokens"] = m.sum()
    metrics["_policy_tokens"] = pm_mask.sum()  # the policy metrics are means over these
    metrics["_sequences"] = (m.sum(-1) > 0).sum()
    return metrics
