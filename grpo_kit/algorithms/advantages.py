"""Advantage estimators: group-relative (GRPO, Dr. GRPO, RLOO, REINFORCE++-baseline) and GAE (PPO).

Pure tensor functions: no model, no config, no I/O, no ``.item()``. Advantages are constants of the
policy gradient, so every function here detaches its inputs.

Dimensions: B prompts (or B sequences for token tensors), G completions per prompt, T completion
tokens. A grouped reward tensor is ``[B, G]``; the token tensors of the same batch have ``B*G`` rows,
row ``b*G + g`` being completion ``g`` of prompt ``b``.

Papers:
    GRPO     Shao et al. 2024, DeepSeekMath, https://arxiv.org/abs/2402.03300
    Dr. GRPO Liu et al. 2025, Understanding R1-Zero-Like Training, https://arxiv.org/abs/2503.20783
    RLOO     Ahmadian et al. 2024, Back to Basics, https://arxiv.org/abs/2402.14740
    REINFORCE++  Hu et al. 2025, https://arxiv.org/abs/2501.03262
    GAE      Schulman et al. 2015, https://arxiv.org/abs/1506.02438
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from grpo_kit.errors import ConfigError  # a zero-dependency module: the one import besides torch

BASELINES = ("mean", "leave_one_out")
STD_SCALES = ("group", "batch", "none")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def _float(x: Tensor) -> Tensor:
    """``x`` detached, in a floating dtype of at least float32 precision."""
    return x.detach().to(torch.promote_types(x.dtype, torch.float32))


def _masked_std(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Unbiased standard deviation of ``x`` over the entries where ``mask`` is true (0 below 2)."""
    n = mask.sum() if dim is None else mask.sum(dim, keepdim=True)
    total = torch.where(mask, x, 0.0)
    mean = (total.sum() if dim is None else total.sum(dim, keepdim=True)) / n.clamp(min=1)
    sq = torch.where(mask, (x - mean) ** 2, 0.0)
    sq = sq.sum() if dim is None else sq.sum(dim, keepdim=True)
    return (sq / (n - 1).clamp(min=1)).sqrt()


# --------------------------------------------------------------------------- group-relative


def group_advantages(
    rewards: Tensor, *, baseline: str = "mean", std_scale: str = "group", eps: float = 1e-6
) -> Tensor:
    """Group-relative advantages of G completions per prompt, one scalar per completion.

    ``A_i = (r_i - b_i) / s``, with the baseline ``b_i``:

    - ``"mean"``: the group mean ``mean_j r_j`` (GRPO, Dr. GRPO, REINFORCE++-baseline);
    - ``"leave_one_out"``: the mean of the other ``G - 1`` rewards ``(sum_j r_j - r_i) / (G - 1)``
      (RLOO, https://arxiv.org/abs/2402.14740);

    and the scale ``s``:

    - ``"group"``: the group's unbiased std ``+ eps`` (GRPO, https://arxiv.org/abs/2402.03300);
    - ``"batch"``: the unbiased std of the advantages over the whole batch ``+ eps``
      (REINFORCE++-baseline, https://arxiv.org/abs/2501.03262);
    - ``"none"``: 1 (Dr. GRPO, https://arxiv.org/abs/2503.20783, and RLOO).

    A NaN reward ("no reward applied") is left out of every statistic and gets advantage 0. A group
    with fewer than two rewards, or whose rewards are all equal, gets advantage 0 (never NaN).

    Args:
        rewards: ``[B, G]``, B prompts of G completions, NaN where no reward applied.
    Returns:
        ``[B, G]`` advantages (float32, or float64 for float64 rewards).

    >>> group_advantages(torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    tensor([[ 0.8660, -0.8660,  0.8660, -0.8660],
            [ 0.0000,  0.0000,  0.0000,  0.0000]])
    >>> group_advantages(torch.tensor([[1.0, 0.0, float("nan")]]), std_scale="none")
    tensor([[ 0.5000, -0.5000,  0.0000]])
    """
    _check_choice("baseline", baseline, BASELINES)
    _check_choice("std_scale", std_scale, STD_SCALES)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    r = _float(rewards)
    has = ~r.isnan()  # [B, G]
    r = torch.where(has, r, 0.0)
    n = has.sum(-1, keepdim=True)  # [B, 1]
    total = r.sum(-1, keepdim=True)  # [B, 1]
    if baseline == "mean":
        adv = r - total / n.clamp(min=1)  # [B, G]
    else:
        adv = r - (total - r) / (n - 1).clamp(min=1)  # [B, G]
    if std_scale == "group":
        adv = adv / (_masked_std(r, has, dim=-1) + eps)
    r_max = torch.where(has, r, -torch.inf).amax(-1, keepdim=True)  # [B, 1]
    r_min = torch.where(has, r, torch.inf).amin(-1, keepdim=True)  # [B, 1]
    informative = has & (n >= 2) & (r_max > r_min)  # [B, G]
    adv = torch.where(informative, adv, 0.0)
    if std_scale == "batch":
        adv = adv / (_masked_std(adv, has) + eps)
    return adv


def per_reward_group_advantages(
    rewards: Tensor, weights: Tensor, *, baseline: str = "mean", std_scale: str = "group", eps: float = 1e-6
) -> Tensor:
    """Multi-reward advantages normalised per reward before the weighted sum (GDPO-style; TRL's
    multi-objective "normalize then sum"), so one high-variance reward cannot drown the others.

    With K rewards ``r_k`` and weights ``w_k``::

        A_i = sum_k w_k * group_advantages(r_k)_i       e.g. sum_k w_k (r_ik - mean_G r_k) / (std_G r_k + eps)

    where the combined-reward form is ``group_advantages(sum_k w_k r_k)``. A NaN score (the reward
    does not apply) is left out of that reward's statistics and contributes 0; a reward constant
    within a group contributes 0 there.

    Args:
        rewards: ``[B, G, K]``: K rewards per completion, NaN where one does not apply.
        weights: ``[K]``.
    Returns:
        ``[B, G]`` advantages.

    >>> r = torch.tensor([[[1.0, 0.0], [0.0, 10.0], [1.0, 20.0], [0.0, 30.0]]])  # correctness, length
    >>> per_reward_group_advantages(r, torch.tensor([1.0, 1.0]))  # +-0.866 (correct) + length's share
    tensor([[-0.2959, -1.2533,  1.2533,  0.2959]])
    >>> group_advantages(r.sum(-1))  # combined: the length (std 12.9) decides the order alone
    tensor([[-1.1451, -0.4344,  0.4344,  1.1451]])
    """
    if rewards.dim() != 3:
        raise ValueError(f"rewards must be [B, G, K], got shape {tuple(rewards.shape)}")
    w = _float(torch.as_tensor(weights)).to(rewards.device)  # [K]
    if w.shape != rewards.shape[-1:]:
        raise ValueError(f"{tuple(w.shape)} weights for {rewards.shape[-1]} rewards")
    per = [group_advantages(rewards[..., k], baseline=baseline, std_scale=std_scale, eps=eps)
           for k in range(rewards.shape[-1])]  # K x [B, G]
    return (torch.stack(per, -1) * w).sum(-1)  # [B, G]


# --------------------------------------------------------------------------- GAE (PPO)


def gae(
    token_rewards: Tensor,
    values: Tensor,
    completion_mask: Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the completion tokens.

    Over the unmasked tokens t (masked tokens, e.g. padding or tool output, are skipped, so
    ``t + 1`` means the next unmasked token)::

        delta_t = r_t + gamma * V_{t+1} - V_t        (V after the last unmasked token is 0)
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t                          (the critic's target, "returns")

    Schulman et al. 2015, https://arxiv.org/abs/1506.02438. The episode is treated as ended at the
    last unmasked token, also for a completion cut at the length limit (as TRL and verl do).

    Args:
        token_rewards: ``[B, T]`` per-token rewards (e.g. from :func:`rewards_at_last_token`, less
            a KL penalty from :func:`grpo_kit.algorithms.losses.kl_in_reward`).
        values: ``[B, T]`` critic values ``V_t`` (detached here).
        completion_mask: ``[B, T]``, true/1 on the tokens that count.
    Returns:
        ``(advantages, returns)``, each ``[B, T]``, 0 on masked tokens.

    >>> a, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2))
    >>> a, ret
    (tensor([[0.5000, 0.5000]]), tensor([[1., 1.]]))
    """
    if not (token_rewards.shape == values.shape == completion_mask.shape) or values.dim() != 2:
        raise ValueError(
            "token_rewards, values and completion_mask must all be [B, T], got "
            f"{tuple(token_rewards.shape)}, {tuple(values.shape)}, {tuple(completion_mask.shape)}"
        )
    r, v = _float(token_rewards), _float(values)
    on = completion_mask.bool()  # [B, T]
    adv = torch.zeros_like(v)  # [B, T]
    next_value = v.new_zeros(v.shape[0])  # [B]
    next_adv = v.new_zeros(v.shape[0])  # [B]
    for t in reversed(range(v.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]  # [B]
        a = delta + gamma * lam * next_adv  # [B]
        adv[:, t] = torch.where(on[:, t], a, 0.0)
        next_value = torch.where(on[:, t], v[:, t], next_value)
        next_adv = torch.where(on[:, t], a, next_adv)
    returns = torch.where(on, adv + v, 0.0)  # [B, T]
    return adv, returns


def rewards_at_last_token(rewards: Tensor, completion_mask: Tensor) -> Tensor:
    """Token rewards ``[B, T]`` holding each sequence's scalar reward on its last unmasked token.

    Args:
        rewards: ``[B]``, one scalar per sequence.
        completion_mask: ``[B, T]``. A row with no unmasked token gets no reward.

    >>> rewards_at_last_token(torch.tensor([2.0, 3.0]), torch.tensor([[1, 1, 0], [1, 1, 1]]))
    tensor([[0., 2., 0.],
            [0., 0., 3.]])
    """
    on = completion_mask.bool()  # [B, T]
    positions = torch.arange(on.shape[-1], device=on.device).expand_as(on)  # [B, T]
    last = torch.where(on, positions, -1).amax(-1)  # [B]
    r = _float(rewards)
    out = torch.zeros(on.shape, dtype=r.dtype, device=r.device)  # [B, T]
    out.scatter_(1, last.clamp(min=0)[:, None], torch.where(last >= 0, r, 0.0)[:, None])
    return out


def whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the entries where ``mask`` is true; 0 elsewhere.

    Mean and unbiased variance are taken over the masked entries of the whole tensor (the usual
    PPO advantage normalisation). With ``shift_mean=False`` the mean is added back (scale only).

    >>> whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]]))
    tensor([[-0.7071,  0.7071,  0.0000]])
    """
    on = mask.bool()
    x = _float(x)
    n = on.sum().clamp(min=1)
    mean = torch.where(on, x, 0.0).sum() / n
    var = torch.where(on, (x - mean) ** 2, 0.0).sum() / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(on, out, 0.0)


# --------------------------------------------------------------------------- registry


class AdvantageEstimator(Protocol):
    """The one signature every entry of :data:`ADVANTAGE_ESTIMATORS` has.

    Args:
        rewards: ``[B, G]`` scalar reward per completion, NaN where no reward applied.
        completion_mask: ``[B*G, T]``; row ``b*G + g`` is completion g of prompt b.
        values: ``[B*G, T]`` critic values; required by estimators with ``needs_values`` (gae),
            ignored by the critic-free ones.
        token_rewards: optional ``[B*G, T]`` per-token rewards added to the scalar ones (e.g. the
            ``-beta * KL`` of :func:`~grpo_kit.algorithms.losses.kl_in_reward`). GAE uses them per
            token; the group estimators add their masked sum to the completion's reward.
        gamma, lam: discount and GAE lambda (gae only; the group estimators are gamma = lam = 1).
        eps: added to the std in the normalising estimators.
    Returns:
        ``(advantages [B*G, T], returns [B*G, T] or None)``; returns (the critic target) only from
        estimators with a critic. Rows without a reward get advantage 0 (and returns = values).
    """

    needs_values: bool

    def __call__(
        self,
        rewards: Tensor,
        completion_mask: Tensor,
        *,
        values: Tensor | None = None,
        token_rewards: Tensor | None = None,
        gamma: float = 1.0,
        lam: float = 1.0,
        eps: float = 1e-6,
    ) -> tuple[Tensor, Tensor | None]: ...


def _group_estimator(baseline: str, std_scale: str, doc: str) -> AdvantageEstimator:
    def estimate(
        rewards: Tensor,
        completion_mask: Tensor,
        *,
        values: Tensor | None = None,  # no critic: ignored
        token_rewards: Tensor | None = None,
        gamma: float = 1.0,  # gamma = lam = 1: ignored
        lam: float = 1.0,
        eps: float = 1e-6,
    ) -> tuple[Tensor, None]:
        if rewards.dim() != 2:
            raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
        B, G = rewards.shape
        on = completion_mask.bool()  # [B*G, T]
        if on.dim() != 2 or on.shape[0] != B * G:
            raise ValueError(f"completion_mask must be [B*G, T] = [{B}*{G}, T], got {tuple(on.shape)}")
        r = _float(rewards)
        if token_rewards is not None:
            r = r + torch.where(on, _float(token_rewards), 0.0).sum(-1).view(B, G)  # [B, G]
        adv = group_advantages(r, baseline=baseline, std_scale=std_scale, eps=eps)  # [B, G]
        return torch.where(on, adv.reshape(B * G, 1), 0.0), None  # [B*G, T]

    estimate.__doc__ = doc
    estimate.needs_values = False  # type: ignore[attr-defined]
    return estimate  # type: ignore[return-value]


def _gae_estimator(
    rewards: Tensor,
    completion_mask: Tensor,
    *,
    values: Tensor | None = None,
    token_rewards: Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    eps: float = 1e-6,  # no normalisation: ignored
) -> tuple[Tensor, Tensor]:
    """PPO: GAE over token rewards (scalar reward on the last token, plus ``token_rewards``)."""
    if values is None:
        raise ValueError("the 'gae' advantage estimator needs critic values (values=[B*G, T])")
    flat = _float(rewards).reshape(-1)  # [B*G]
    has = ~flat.isnan()  # [B*G]
    tok = rewards_at_last_token(torch.where(has, flat, 0.0), completion_mask)  # [B*G, T]
    if token_rewards is not None:
        tok = tok + _float(token_rewards)
    adv, returns = gae(tok, values, completion_mask, gamma=gamma, lam=lam)
    on = completion_mask.bool() & has[:, None]  # [B*G, T]
    return torch.where(on, adv, 0.0), torch.where(on, returns, _float(values) * completion_mask)


_gae_estimator.needs_values = True  # type: ignore[attr-defined]

ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "grpo": _group_estimator("mean", "group", "GRPO: (r - group mean) / (group std + eps)."),
    "dr_grpo": _group_estimator("mean", "none", "Dr. GRPO: r - group mean (no std division)."),
    "rloo": _group_estimator("leave_one_out", "none", "RLOO: r - mean of the other G - 1 rewards."),
    "reinforce_pp_baseline": _group_estimator(
        "mean", "batch", "REINFORCE++-baseline: (r - group mean) / (batch std + eps)."
    ),
    "gae": _gae_estimator,  # type: ignore[dict-item]
}


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered under ``name``.

    >>> get_advantage_estimator("ppo")
    Traceback (most recent call last):
    ...
    grpo_kit.errors.ConfigError: unknown advantage estimator 'ppo'; known: dr_grpo, gae, grpo, reinforce_pp_baseline, rloo
    """
    if name not in ADVANTAGE_ESTIMATORS:
        known = ", ".join(sorted(ADVANTAGE_ESTIMATORS))
        raise ConfigError(f"unknown advantage estimator {name!r}; known: {known}")
    return ADVANTAGE_ESTIMATORS[name]


__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AdvantageEstimator",
    "BASELINES",
    "STD_SCALES",
    "gae",
    "get_advantage_estimator",
    "group_advantages",
    "per_reward_group_advantages",
    "rewards_at_last_token",
    "whiten",
]
