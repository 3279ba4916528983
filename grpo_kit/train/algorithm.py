"""The algorithm object: everything that differs between the GRPO family and PPO, in one place.

Built from the config's ``algorithm`` block and the registries of :mod:`grpo_kit.algorithms`, it
owns whether a critic is needed, when a group or a batch carries no learning signal (the skip
rule), the loss mask, the advantage estimator's arguments and the policy loss's switches. The
trainer, the update and the script call it and never test ``algorithm.type``.

Adding an advantage estimator is one entry in ``ADVANTAGE_ESTIMATORS``
(``grpo_kit/algorithms/advantages.py``): its ``needs_values`` flag says which type offers it, the
config accepts its name, and this object calls it with the common signature.

>>> from grpo_kit.train.config import GRPOConfig, PPOConfig
>>> grpo, ppo = Algorithm(GRPOConfig(), max_new_tokens=8), Algorithm(PPOConfig(), max_new_tokens=8)
>>> grpo.needs_critic, ppo.needs_critic
(False, True)
>>> grpo.group_has_signal([1.0, 1.0]), ppo.group_has_signal([1.0, 1.0]), ppo.group_has_signal([0.0])
(False, True, True)
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from grpo_kit.algorithms.advantages import ADVANTAGE_ESTIMATORS, whiten
from grpo_kit.algorithms.losses import (POLICY_LOSSES, AdaptiveKLController, FixedKLController, aggregate,
                                        kl_in_reward, kl_penalty, policy_loss_settings, top_entropy_mask)

ESTIMATOR_ARGS = ("gamma", "lam")
"""Estimator arguments a config block may carry (PPO's); absent ones keep the estimator's default."""


class Algorithm:
    """The algorithm a config describes; see the module docstring."""

    def __init__(self, cfg, *, max_new_tokens: int):
        self.cfg = cfg
        self.estimator = ADVANTAGE_ESTIMATORS[cfg.advantage]
        self.needs_critic: bool = self.estimator.needs_values
        self.estimator_args: dict[str, Any] = {k: getattr(cfg, k) for k in ESTIMATOR_ARGS
                                               if k in type(cfg).model_fields}
        self.max_len = max_new_tokens
        self.whiten = getattr(cfg, "whiten_advantages", False)
        self.kl_in_reward = cfg.kl.placement == "reward"
        self.correction = dict(tis_cap=cfg.tis_cap, tis_level=cfg.tis_level, seq_mask_band=cfg.seq_mask_band,
                               token_mask_band=cfg.token_mask_band)
        # the sampler's log-probs are needed when a rollout correction is on
        self.needs_sampler_logprobs = any(v is not None for k, v in self.correction.items() if k != "tis_level")
        self.loss_fn = POLICY_LOSSES[cfg.policy_loss]
        self.loss_settings = {k: getattr(cfg, k) for k in policy_loss_settings(cfg.policy_loss)}
        self.token_selection = getattr(self.loss_fn, "token_selection", None)  # Clip-Cov, KL-Cov
        self.top_entropy = cfg.top_entropy_quantile
        # tokens chosen over the whole step (from the log-probs and entropies at its start)
        self.needs_step_logprobs = self.token_selection is not None or self.top_entropy is not None
        self.needs_step_entropy = self.top_entropy is not None

    # ------------------------------------------------------------------ the skip rule
    def group_has_signal(self, rewards: Sequence[float | None]) -> bool:
        """Whether a prompt group can move the policy. Under a group baseline, only a group whose
        rewards differ does (equal rewards give advantage 0); a critic's baseline learns from any
        reward, so with a critic a group needs one reward only."""
        vals = [r for r in rewards if r is not None]
        if self.needs_critic:
            return len(vals) > 0
        return len(vals) >= 2 and max(vals) - min(vals) > 1e-12

    def no_signal_fraction(self, rewards: Sequence[float | None], groups: list[list[int]]) -> float:
        """The share of groups without signal; a step is skipped when it is 1."""
        return sum(not self.group_has_signal([rewards[i] for i in g]) for g in groups) / max(1, len(groups))

    def kl_controller(self) -> FixedKLController | AdaptiveKLController:
        kl = self.cfg.kl
        return AdaptiveKLController(kl.beta, kl.target, kl.horizon) if kl.target else FixedKLController(kl.beta)

    # ------------------------------------------------------------------ masks and advantages
    def loss_mask(self, batch) -> torch.Tensor:
        """``[N, T]``: the completion tokens that enter every loss. Rows without a combined reward
        (no reward applies, or a failed reward under ``scoring.on_error: exclude``) are left out;
        with ``mask_truncated``, so are completions cut at the length limit (DAPO)."""
        m = batch.completion_mask.float()  # [N, T]
        has_reward = ~batch.rewards.reshape(-1).isnan()  # [N]
        m = m * has_reward.float()[:, None]
        if self.cfg.mask_truncated:
            m = m * (~batch.truncated).float()[:, None]  # DAPO overlong filtering
        return m

    def advantages(self, batch, mask: torch.Tensor, *, old_logp=None, ref_logp=None, beta: float = 0.0,
                   old_values=None) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """Per-token advantages ``[N, T]`` (and the critic's returns) from the rewards ``[B, G]``;
        with the KL placed in the reward, ``-beta * KL`` is added per token first."""
        token_rewards, metrics = None, {}
        if beta > 0 and self.kl_in_reward:
            kl = kl_penalty(old_logp, ref_logp, self.cfg.kl.estimator)  # [N, T]
            token_rewards = kl_in_reward(torch.zeros_like(kl), kl, beta) * mask
        if getattr(self.cfg, "reward_norm", "combined") == "per_reward":  # sum_k w_k A(r_k)
            parts, w = batch.reward_parts, batch.reward_weights  # [B, G, K], [K]
            if parts is None:
                raise ValueError("algorithm.reward_norm: per_reward needs each reward's scores "
                                 "(make_batch(..., weights=...))")
            adv = sum(w[k] * self.estimator(parts[..., k], mask, **self.estimator_args)[0]
                      for k in range(parts.shape[-1]))
            returns = None
        else:
            adv, returns = self.estimator(batch.rewards, mask, values=old_values, token_rewards=token_rewards,
                                          **self.estimator_args)
        if self.whiten:
            adv = whiten(adv, mask) * mask
        on = mask.bool()
        if returns is not None and old_values is not None:  # how much of the return the critic explains
            ret = returns[on]
            metrics["value/explained_var"] = 1 - (ret - old_values[on]).var() / ret.var().clamp(min=1e-8)
        vals = adv[on]
        if vals.numel():
            metrics |= {"advantage/mean": vals.mean(), "advantage/std": vals.std() if vals.numel() > 1 else 0.0,
                        "advantage/min": vals.min(), "advantage/max": vals.max()}
        return adv, returns, metrics

    # ------------------------------------------------------------------ losses
    def agg(self, num_tokens, num_seqs) -> dict[str, Any]:
        """The aggregation keywords every loss of one minibatch takes (see ``aggregate``)."""
        return dict(agg=self.cfg.loss_agg, max_len=self.max_len, num_tokens=num_tokens, num_seqs=num_seqs)

    def policy_tokens(self, mask, *, old_logp, entropy, adv, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], dict]:
        """Over the whole step's rows (``[N, T]`` each, the policy at the step's start): the tokens
        that carry policy gradient (``mask`` times :func:`top_entropy_mask` under
        ``top_entropy_quantile``; None when every token of ``mask`` does), the per-token tensors
        the policy loss takes for the batch (Clip-Cov's and KL-Cov's ``selected``), and metrics."""
        keep, per_token, metrics = None, {}, {}
        if self.top_entropy is not None:
            keep = mask * top_entropy_mask(entropy, mask, self.top_entropy).to(mask.dtype)  # [N, T]
            metrics["policy/entropy_kept_frac"] = keep.sum() / mask.sum().clamp(min=1)
        if self.token_selection is not None:
            own = inspect.signature(self.token_selection).parameters
            args = {k: v for k, v in self.loss_settings.items() if k in own}
            per_token["selected"] = self.token_selection(old_logp, adv, mask if keep is None else keep,
                                                         generator=generator, **args)
        return keep, per_token, metrics

    def policy_loss(self, logp, old_logp, adv, mask, *, is_weights, agg: dict,
                    per_token: dict | None = None) -> tuple[torch.Tensor, dict]:
        """The ``policy_loss`` entry with the config's settings (``per_token``: this micro-batch's
        rows of :meth:`policy_tokens`' tensors)."""
        return self.loss_fn(logp, old_logp, adv, mask, is_weights=is_weights, **agg, **self.loss_settings,
                            **(per_token or {}))

    def kl_term(self, logp, ref_logp, mask, *, beta: float, agg: dict) -> tuple[torch.Tensor | None, dict]:
        """``beta * aggregate(KL)`` for the loss (None when the KL is in the reward), and the KL metrics:
        ``kl`` per token, ``kl/sequence`` summed over each completion (the adaptive controller's unit)."""
        kl = kl_penalty(logp, ref_logp, self.cfg.kl.estimator)  # [n, T]
        d = kl.detach() * mask
        rows = (mask.sum(-1) > 0).sum().clamp(min=1)  # sequences in the loss
        metrics = {"kl": d.sum() / mask.sum().clamp(min=1), "kl/sequence": d.sum() / rows}
        term = None if self.kl_in_reward else beta * aggregate(kl, mask, **agg)
        return term, metrics
