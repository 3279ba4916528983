"""Policy, value, KL and entropy losses of GRPO/PPO and their variants, as pure tensor functions.

No model, no config, no I/O, no ``.item()``: tensors in, tensors out (a scalar loss and a dict of
detached scalar metric tensors). Dimensions: B sequences (rows), T completion tokens.

Every loss reduces its per-token values with :func:`aggregate`; pass the *global* ``num_tokens`` /
``num_seqs`` of the optimizer step when a step is split into accumulated micro-batches, and the sum
of the micro-batch gradients equals the gradient of the whole batch (tests/test_losses.py proves it).

Papers:
    PPO        Schulman et al. 2017, https://arxiv.org/abs/1707.06347 (clipped surrogate)
    dual clip  Ye et al. 2020, Mastering Complex Control in MOBA Games, https://arxiv.org/abs/1912.09729
    GRPO       Shao et al. 2024, https://arxiv.org/abs/2402.03300 (seq_mean_token_mean, k3 KL)
    DAPO       Yu et al. 2025, https://arxiv.org/abs/2503.14476 (clip-higher, token_mean)
    Dr. GRPO   Liu et al. 2025, https://arxiv.org/abs/2503.20783 (constant_norm)
    GSPO       Zheng et al. 2025, https://arxiv.org/abs/2507.18071 (sequence-level ratio)
    KL control Ziegler et al. 2019, https://arxiv.org/abs/1909.08593 (adaptive beta)
    k1/k2/k3   Schulman 2020, Approximating KL Divergence, http://joschu.net/blog/kl-approx.html
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant_norm")
RATIO_LEVELS = ("token", "sequence")
MAX_LOG_RATIO = 20.0
"""Log-ratios are clamped to +-MAX_LOG_RATIO before ``exp`` (exp(20) ~ 4.9e8: no overflow)."""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        raise ValueError(f"expected [B, T] tensors of one shape, got {shapes}")


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


# --------------------------------------------------------------------------- aggregation


def aggregate(
    per_token_loss: Tensor,
    mask: Tensor,
    agg: str = "token_mean",
    *,
    max_len: int | None = None,
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
) -> Tensor:
    """Reduce a per-token loss ``l[b, t]`` (``[B, T]``) over the unmasked tokens to a scalar.

    With ``m`` the mask and ``|y_b| = sum_t m[b, t]``:

    - ``"token_mean"``: ``sum_bt m l / N_tok`` (DAPO, https://arxiv.org/abs/2503.14476): every token
      weighs the same, so long sequences weigh more.
    - ``"seq_mean_token_mean"``: ``sum_b (sum_t m l / |y_b|) / N_seq`` (original GRPO,
      https://arxiv.org/abs/2402.03300): every sequence weighs the same.
    - ``"seq_mean_token_sum"``: ``sum_bt m l / N_seq``.
    - ``"constant_norm"``: ``sum_bt m l / (N_seq * max_len)`` (Dr. GRPO,
      https://arxiv.org/abs/2503.20783): no length bias; ``max_len`` is the generation limit.

    ``N_tok`` defaults to this batch's unmasked token count and ``N_seq`` to its row count B (a row
    with no token counts as a sequence with loss 0). When one optimizer step accumulates several
    micro-batches, pass the step's totals as ``num_tokens`` / ``num_seqs``, and *sum* (not average)
    the micro-batch losses: the gradient is then that of the whole batch.

    >>> l = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]); m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    >>> [round(float(aggregate(l, m, a, max_len=4)), 4) for a in AGGREGATIONS]
    [2.5, 3.0, 5.0, 1.25]
    """
    _check_choice("agg", agg, AGGREGATIONS)
    m = mask.to(per_token_loss.dtype)
    per_seq_sum = (per_token_loss * m).sum(-1)  # [B]
    n_seqs = per_token_loss.shape[0] if num_seqs is None else num_seqs
    if agg == "token_mean":
        n_tok = m.sum().clamp(min=1) if num_tokens is None else num_tokens
        return per_seq_sum.sum() / n_tok
    if agg == "seq_mean_token_mean":
        return (per_seq_sum / m.sum(-1).clamp(min=1)).sum() / n_seqs
    if agg == "seq_mean_token_sum":
        return per_seq_sum.sum() / n_seqs
    if max_len is None:
        raise ValueError("agg='constant_norm' needs max_len (the generation length limit)")
    return per_seq_sum.sum() / (n_seqs * max_len)


# --------------------------------------------------------------------------- policy loss


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    ratio_level: str = "token",
    agg: str = "token_mean",
    max_len: int | None = None,
    is_weights: Tensor | None = None,
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate loss of PPO/GRPO and its variants, aggregated by :func:`aggregate`.

    Per token, with ``r = exp(logp - old_logp)`` and advantage ``A``::

        l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))        PPO, arXiv 1707.06347
        l = min(l, -A c)   where A < 0, with dual_clip = c > 1        dual clip, arXiv 1912.09729
        l = w l            with is_weights = w                        truncated IS (sampler mismatch)

    ``clip_high > clip_low`` is DAPO's clip-higher. ``ratio_level="sequence"`` is GSPO
    (https://arxiv.org/abs/2507.18071): one ratio per sequence, ``s_b = exp(mean_t (logp - old_logp))``,
    applied to every token as ``sg[s_b] * exp(logp_t - sg[logp_t])`` (GSPO-token), so the value is
    ``s_b`` and the gradient flows through every token; with sequence-level advantages this equals
    GSPO's gradient. GSPO uses small clip ranges (the paper: 3e-4 and 4e-4) and
    ``agg="seq_mean_token_mean"``.

    Args:
        logp: ``[B, T]`` log-probs of the sampled tokens under the policy being trained (with grad).
        old_logp: ``[B, T]`` log-probs under the policy that sampled (or the trainer's copy of it).
        advantages: ``[B]`` (broadcast over tokens) or ``[B, T]``.
        completion_mask: ``[B, T]``, true/1 on the tokens that count.
        is_weights: optional ``[B, T]`` per-token weights, e.g. :func:`truncated_is_weights`.
        agg, max_len, num_tokens, num_seqs: see :func:`aggregate`.
    Returns:
        ``(loss, metrics)``: the scalar loss, and detached scalar tensors ``clip_frac_low`` (tokens
        where the lower clip is active: A < 0, r < 1 - clip_low), ``clip_frac_high`` (A > 0,
        r > 1 + clip_high), ``dual_clip_frac``, ``approx_kl`` (k3 estimate of KL(old || new)),
        ``ratio_mean``, ``ratio_min``, ``ratio_max``, all over this call's unmasked tokens.
    """
    _check_same_shape(logp=logp, old_logp=old_logp, completion_mask=completion_mask)
    _check_choice("ratio_level", ratio_level, RATIO_LEVELS)
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip={dual_clip} must be > 1 (the paper uses 3)")
    m = completion_mask.to(logp.dtype)  # [B, T]
    if advantages.dim() == 1:
        advantages = advantages[:, None]  # [B, 1], broadcast over T
    log_ratio = logp - old_logp.detach()  # [B, T]
    if ratio_level == "sequence":
        seq_log_ratio = (log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1)  # [B]
        log_ratio = seq_log_ratio.detach()[:, None] + logp - logp.detach()  # [B, T], value s_b per token
    ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()  # [B, T]
    adv = advantages.detach().to(ratio.dtype)
    unclipped = -adv * ratio  # [B, T]
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [B, T]
    loss = torch.maximum(unclipped, clipped)  # [B, T]
    if dual_clip is not None:
        dual_clipped = loss > -adv * dual_clip
        loss = torch.where((adv < 0) & dual_clipped, -adv * dual_clip, loss)
    if is_weights is not None:
        loss = loss * is_weights
    total = aggregate(loss, m, agg, max_len=max_len, num_tokens=num_tokens, num_seqs=num_seqs)
    return total, _policy_metrics(ratio.detach(), adv, m, clip_low, clip_high, dual_clip)


@torch.no_grad()
def _policy_metrics(
    ratio: Tensor, adv: Tensor, m: Tensor, clip_low: float, clip_high: float, dual_clip: float | None
) -> dict[str, Tensor]:
    """The metrics of :func:`policy_loss`, over the unmasked tokens (0, or 1 for ratios, if none)."""
    on, has_tokens = m.bool(), m.bool().any()
    log_ratio = ratio.log()  # [B, T], already clamped by the caller's exp
    dual = torch.inf if dual_clip is None else dual_clip
    return {
        "clip_frac_low": _masked_mean(((adv < 0) & (ratio < 1.0 - clip_low)).to(m.dtype), m),
        "clip_frac_high": _masked_mean(((adv > 0) & (ratio > 1.0 + clip_high)).to(m.dtype), m),
        "dual_clip_frac": _masked_mean(((adv < 0) & (ratio > dual)).to(m.dtype), m),
        "approx_kl": _masked_mean(ratio - 1.0 - log_ratio, m),  # k3 estimate of KL(old || new)
        "ratio_mean": _masked_mean(ratio, m),
        "ratio_min": torch.where(has_tokens, torch.where(on, ratio, torch.inf).amin(), 1.0),
        "ratio_max": torch.where(has_tokens, torch.where(on, ratio, -torch.inf).amax(), 1.0),
    }


def truncated_is_weights(trainer_logp: Tensor, sampler_logp: Tensor, cap: float = 2.0) -> Tensor:
    """Truncated importance weights ``min(pi_trainer / pi_sampler, cap)`` per token, detached.

    Corrects for the mismatch between the sampler's (e.g. vLLM's) and the trainer's numerics of the
    same weights (truncated IS, Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You
    Off-Policy RL Training", https://fengyao.notion.site/off-policy-rl). Shapes ``[B, T]``.

    >>> truncated_is_weights(torch.tensor([[0.0, -1.0]]), torch.tensor([[-1.0, 0.0]]), cap=2.0)
    tensor([[2.0000, 0.3679]])
    """
    log_w = (trainer_logp - sampler_logp).detach().clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # [B, T]
    return log_w.exp().clamp(max=cap)


TIS_LEVELS = ("token", "sequence")


def rollout_correction(
    trainer_logp: Tensor,
    sampler_logp: Tensor,
    completion_mask: Tensor,
    *,
    tis_cap: float | None = None,
    tis_level: str = "token",
    seq_mask_band: tuple[float, float] | None = None,
    token_mask_band: tuple[float, float] | None = None,
) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Per-token loss weights ``[B, T]`` (detached) that correct for the sampler's distribution
    differing from the trainer's (other numerics, e.g. bf16 vLLM vs an fp32 trainer; stale weights
    in asynchronous training), and metrics of the mismatch. ``None`` weights when every switch is off.

    With ``log rho_t = trainer_logp_t - sampler_logp_t`` (the trainer's log-prob of the sampled token
    minus the sampler's) over the tokens of ``completion_mask``::

        tis_level token:     w_t = min(rho_t, C)                       truncated IS, Yao et al. 2025
                                                                        (fengyao.notion.site/off-policy-rl)
        tis_level sequence:  w_t = min(prod_t' rho_t', C), every t      sequence-level truncated IS
        seq_mask_band (l, h): keep_b = [l <= exp(mean_t log rho_t) <= h]  geometric-mean sequence masking
                                                                        (masked IS; Liu et al. 2025, "When
                                                                        Speed Kills Stability")
        token_mask_band (l, h): keep_t = [l <= rho_t <= h]              IcePop (Ling Team 2025, arXiv
                                                                        2510.18855): tokens outside the band
                                                                        get no gradient
        weights = w * keep

    (``C = tis_cap``; ``w = 1`` without it.) A masked token or sequence contributes nothing to the
    policy loss; the loss normalisers are unchanged. In the PPO ratio the trainer's log-probs are the
    proximal ("old") policy, the sampler's the behaviour policy (AReaL's decoupled objective).

    Metrics (over the unmasked tokens of ``completion_mask``): ``is_weight_mean``, ``is_weight_max``
    (of ``weights``, 1 when off), ``masked_frac`` (tokens with weight 0 from a mask),
    ``kl_sampler_trainer`` (k3 estimate of KL(sampler || trainer) per token: ``rho - 1 - log rho``).

    >>> w, m = rollout_correction(torch.tensor([[0.0, -1.0]]), torch.tensor([[-1.0, 0.0]]),
    ...                           torch.ones(1, 2), tis_cap=2.0)
    >>> w, round(float(m["kl_sampler_trainer"]), 4)
    (tensor([[2.0000, 0.3679]]), 0.5431)
    """
    _check_same_shape(trainer_logp=trainer_logp, sampler_logp=sampler_logp, completion_mask=completion_mask)
    _check_choice("tis_level", tis_level, TIS_LEVELS)
    m = completion_mask.to(trainer_logp.dtype)  # [B, T]
    log_rho = ((trainer_logp - sampler_logp).detach() * m).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # [B, T]
    rho = log_rho.exp()  # [B, T]
    weights = torch.ones_like(rho)  # [B, T]
    keep = torch.ones_like(rho)  # [B, T]
    if tis_cap is not None:
        if tis_level == "token":
            weights = rho.clamp(max=tis_cap)
        else:
            seq = (log_rho * m).sum(-1).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()  # [B]
            weights = seq.clamp(max=tis_cap)[:, None].expand_as(rho)
    if seq_mask_band is not None:
        low, high = seq_mask_band
        geo = ((log_rho * m).sum(-1) / m.sum(-1).clamp(min=1)).exp()  # [B] geometric-mean ratio
        keep = keep * ((geo >= low) & (geo <= high)).to(keep.dtype)[:, None]
    if token_mask_band is not None:
        low, high = token_mask_band
        keep = keep * ((rho >= low) & (rho <= high)).to(keep.dtype)
    on = tis_cap is not None or seq_mask_band is not None or token_mask_band is not None
    w = weights * keep  # [B, T]
    has_tokens = m.bool().any()
    metrics = {
        "is_weight_mean": _masked_mean(w, m) if on else torch.ones(()),
        "is_weight_max": torch.where(has_tokens, torch.where(m.bool(), w, -torch.inf).amax(), 1.0) if on
        else torch.ones(()),
        "masked_frac": _masked_mean(1.0 - keep, m),
        "kl_sampler_trainer": _masked_mean(rho - 1.0 - log_rho, m),
    }
    return (w if on else None), metrics


# --------------------------------------------------------------------------- KL


def _k1(log_ratio: Tensor) -> Tensor:
    return log_ratio


def _k2(log_ratio: Tensor) -> Tensor:
    return 0.5 * log_ratio**2


def _k3(log_ratio: Tensor) -> Tensor:
    return (-log_ratio).exp() + log_ratio - 1.0  # exp(ref - logp) - (ref - logp) - 1


KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi, ``[B, T]``.

    With ``d = logp - ref_logp`` (clamped to +-MAX_LOG_RATIO against overflow):

    - ``"k1"``: ``d`` (unbiased, high variance, can be negative);
    - ``"k2"``: ``d**2 / 2`` (biased, low variance);
    - ``"k3"``: ``exp(-d) + d - 1 = exp(ref - logp) - (ref - logp) - 1`` (unbiased, low variance,
      >= 0; the GRPO paper's choice).

    Schulman, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html.

    >>> kl_penalty(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.0]]), "k3")
    tensor([[0.0000, 0.3679]])
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; known: {', '.join(KL_ESTIMATORS)}")
    log_ratio = (logp - ref_logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # [B, T]
    return KL_ESTIMATORS[estimator](log_ratio)


def kl_in_reward(token_rewards: Tensor, kl: Tensor, beta: float | Tensor) -> Tensor:
    """KL as a reward penalty: ``token_rewards - beta * kl`` per token (``[B, T]``), before GAE.

    The KL is detached: a reward is a constant of the policy gradient (Ziegler et al. 2019,
    https://arxiv.org/abs/1909.08593). ``kl`` should be 0 on masked tokens.
    """
    return token_rewards - beta * kl.detach()


class FixedKLController:
    """A constant KL coefficient ``beta``; :meth:`update` does nothing."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.beta


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593, sec. 2.2).

    ``e = clip(KL / target - 1, -0.2, 0.2)``, ``beta <- beta * (1 + e * n_steps / horizon)``: beta
    grows when the measured KL is above ``target`` and shrinks when below.

    >>> c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    >>> round(c.update(current_kl=12.0, n_steps=1000), 6)  # KL above target: e = 0.2, x1.02
    0.102
    """

    def __init__(self, init_beta: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target ({target}) and horizon ({horizon}) must be > 0")
        self.beta = init_beta
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update beta from the KL measured over the last ``n_steps`` samples; return the new beta."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


# --------------------------------------------------------------------------- value and entropy


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    completion_mask: Tensor,
    *,
    clip: float | None = 0.2,
    agg: str = "token_mean",
    max_len: int | None = None,
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss of PPO (https://arxiv.org/abs/1707.06347), per token::

        l = 0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)     (c = clip; None: no clip)

    aggregated by :func:`aggregate`. Shapes ``[B, T]``. Metrics: ``value_clip_frac`` (tokens where
    the clipped term is the larger) and ``value_mse``.

    >>> V, V_old, R = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]])
    >>> value_loss(V, V_old, R, torch.ones(1, 1))[0]  # clipped V = 0.2: 0.5 * max(1, 3.24)
    tensor(1.6200)
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, completion_mask=completion_mask)
    m = completion_mask.to(values.dtype)
    returns, old_values = returns.detach(), old_values.detach()
    err = (values - returns) ** 2  # [B, T]
    if clip is None:
        per_token = 0.5 * err
        clipped_frac = torch.zeros((), dtype=values.dtype, device=values.device)
    else:
        v_clipped = old_values + (values - old_values).clamp(-clip, clip)  # [B, T]
        err_clipped = (v_clipped - returns) ** 2  # [B, T]
        per_token = 0.5 * torch.maximum(err, err_clipped)
        clipped_frac = _masked_mean((err_clipped > err).to(m.dtype), m).detach()
    loss = aggregate(per_token, m, agg, max_len=max_len, num_tokens=num_tokens, num_seqs=num_seqs)
    return loss, {"value_clip_frac": clipped_frac, "value_mse": _masked_mean(err.detach(), m)}


def entropy_loss(
    entropy: Tensor,
    completion_mask: Tensor,
    *,
    agg: str = "token_mean",
    max_len: int | None = None,
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
) -> Tensor:
    """The entropy bonus as a loss: ``-aggregate(H)``, from per-token entropies ``H`` ``[B, T]``.

    Add ``coef * entropy_loss(...)`` to the total loss to raise the policy's entropy. Per-token
    entropies come from :func:`grpo_kit.algorithms.logprobs.token_entropy`.

    >>> entropy_loss(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[1, 1, 0]]))
    tensor(-2.)
    """
    m = completion_mask.to(entropy.dtype)
    return -aggregate(entropy, m, agg, max_len=max_len, num_tokens=num_tokens, num_seqs=num_seqs)


__all__ = [
    "AGGREGATIONS",
    "AdaptiveKLController",
    "FixedKLController",
    "KL_ESTIMATORS",
    "MAX_LOG_RATIO",
    "RATIO_LEVELS",
    "aggregate",
    "entropy_loss",
    "kl_in_reward",
    "kl_penalty",
    "policy_loss",
    "truncated_is_weights",
    "value_loss",
]
