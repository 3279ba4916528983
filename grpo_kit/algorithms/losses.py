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
    CISPO      MiniMax 2025, MiniMax-M1, https://arxiv.org/abs/2506.13585 (clipped IS weight)
    GMPO       Zhao et al. 2025, https://arxiv.org/abs/2507.20673 (geometric-mean ratio)
    SAPO       Gao et al. 2025, https://arxiv.org/abs/2511.20347 (soft gate)
    Clip/KL-Cov Cui et al. 2025, https://arxiv.org/abs/2505.22617 (covariance-selected tokens)
    80/20      Wang et al. 2025, https://arxiv.org/abs/2506.01939 (top-entropy tokens)

The policy losses are selected by name from :data:`POLICY_LOSSES` (``algorithm.policy_loss``).
"""

from __future__ import annotations

import inspect
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


# --------------------------------------------------------------------------- policy-loss registry
#
# Every entry of POLICY_LOSSES has the signature of :func:`policy_loss` (ppo_clip):
# ``(logp, old_logp, advantages, completion_mask, *, agg, max_len, num_tokens, num_seqs, is_weights,
# **settings) -> (loss, metrics)``, with ``logp``/``old_logp``/``completion_mask`` ``[B, T]``,
# ``advantages`` ``[B]`` or ``[B, T]``, and keyword-only settings with defaults. Every per-token
# loss goes through :func:`aggregate`, so the step's ``num_tokens``/``num_seqs`` make accumulated
# micro-batches equal one batch. An entry whose loss needs statistics of the whole batch (Clip-Cov,
# KL-Cov) carries ``token_selection``: computed once over the batch and passed to every micro-batch
# as ``selected``, as ``num_tokens`` is (tests/test_policy_losses.py).


def _inputs(logp: Tensor, old_logp: Tensor, advantages: Tensor, completion_mask: Tensor):
    """``(m, adv, log_ratio)``: the mask as floats, advantages ``[B, 1]`` or ``[B, T]`` (detached),
    ``logp - sg(old_logp)`` ``[B, T]``."""
    _check_same_shape(logp=logp, old_logp=old_logp, completion_mask=completion_mask)
    m = completion_mask.to(logp.dtype)  # [B, T]
    adv = advantages.detach().to(logp.dtype)
    adv = adv[:, None] if adv.dim() == 1 else adv  # [B, 1] or [B, T]
    return m, adv, logp - old_logp.detach()


@torch.no_grad()
def _ratio_metrics(ratio: Tensor, m: Tensor) -> dict[str, Tensor]:
    on, has_tokens = m.bool(), m.bool().any()
    return {
        "approx_kl": _masked_mean(ratio - 1.0 - ratio.log(), m),  # k3 estimate of KL(old || new)
        "ratio_mean": _masked_mean(ratio, m),
        "ratio_min": torch.where(has_tokens, torch.where(on, ratio, torch.inf).amin(), 1.0),
        "ratio_max": torch.where(has_tokens, torch.where(on, ratio, -torch.inf).amax(), 1.0),
    }


def _weighted(loss: Tensor, is_weights: Tensor | None) -> Tensor:
    return loss if is_weights is None else loss * is_weights


def cispo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    agg: str = "token_mean",
    max_len: int | None = None,
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
    is_weights: Tensor | None = None,
    clip_low: float = 1.0,
    clip_high: float = 0.28,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO (MiniMax-M1, https://arxiv.org/abs/2506.13585, eq. 4): clip the importance weight,
    not the update. Per token, with ``r = exp(logp - old_logp)``::

        l = -sg(clip(r, 1 - clip_low, 1 + clip_high)) * A * logp          gradient -sg(w) A grad(logp)

    aggregated by :func:`aggregate`. Every token keeps its gradient, the clipped ones included
    (PPO's clip zeroes them). The paper sets no lower bound (``clip_low = 1``: ``r >= 0``) and
    tunes only the upper one. Shapes as :func:`policy_loss` (``[B, T]``; advantages ``[B]`` or
    ``[B, T]``). Metrics: ``clip_frac_low`` /
    ``clip_frac_high`` (tokens whose weight was clipped from below / above) and the ratio metrics.

    >>> logp = torch.tensor([[-1.0]], requires_grad=True)
    >>> loss, _ = cispo_loss(logp, torch.tensor([[-1.5]]), torch.tensor([2.0]), torch.ones(1, 1), clip_high=0.2)
    >>> loss.backward(); logp.grad  # r = e^0.5 = 1.65 -> w = 1.2: -1.2 * 2
    tensor([[-2.4000]])
    """
    m, adv, log_ratio = _inputs(logp, old_logp, advantages, completion_mask)
    ratio = log_ratio.detach().clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()  # [B, T]
    w = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [B, T], no gradient
    loss = _weighted(-w * adv * logp, is_weights)  # [B, T]
    metrics = {"clip_frac_low": _masked_mean((ratio < 1.0 - clip_low).to(m.dtype), m),
               "clip_frac_high": _masked_mean((ratio > 1.0 + clip_high).to(m.dtype), m)}
    total = aggregate(loss, m, agg, max_len=max_len, num_tokens=num_tokens, num_seqs=num_seqs)
    return total, metrics | _ratio_metrics(ratio, m)


def gmpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    agg: str = "seq_mean_token_mean",
    max_len: int | None = None,
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
    is_weights: Tensor | None = None,
    clip_low: float = 0.4,
    clip_high: float = 0.4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GMPO, Geometric-Mean Policy Optimization (https://arxiv.org/abs/2507.20673; its
    objective with token-level clipping): the geometric mean of the token ratios, clipped per
    token in log space. For sequence b
    with advantage ``A_b`` and ``l_t = logp_t - old_logp_t`` over its completion tokens::

        m_t = min(l_t, clip(l_t, -clip_low, clip_high))   if A_b > 0
        m_t = max(l_t, clip(l_t, -clip_low, clip_high))   if A_b < 0
        J_b = A_b * exp(mean_t m_t),        l[b, t] = -J_b on every token of b

    aggregated by :func:`aggregate`; the paper's objective (the mean of ``-J_b`` over sequences) is
    ``agg="seq_mean_token_mean"``, the default here (the trainer's ``algorithm.loss_agg`` applies
    in training). The clip range is the paper's (``exp(+-0.4)`` in ratio units). ``A_b`` is the
    row's mean advantage over its tokens: GMPO needs sequence-level advantages
    (``needs_sequence_advantages``; the config refuses it with a critic's per-token ones).
    Metrics: ``clip_frac_low`` (A < 0, ``l_t < -clip_low``), ``clip_frac_high`` (A > 0,
    ``l_t > clip_high``) and the ratio metrics.
    Shapes: ``logp``, ``old_logp``, ``completion_mask`` ``[B, T]``; ``advantages`` ``[B]`` or ``[B, T]``.

    >>> loss, _ = gmpo_loss(torch.tensor([[0.1, 0.3]]), torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    >>> round(float(loss), 4)  # -exp((0.1 + 0.3) / 2)
    -1.2214
    """
    m, adv, log_ratio = _inputs(logp, old_logp, advantages, completion_mask)
    n_tok = m.sum(-1).clamp(min=1)  # [B]
    seq_adv = (adv * m).sum(-1) / n_tok if adv.shape[1] > 1 else adv[:, 0]  # [B]
    sign = seq_adv.sign()[:, None]  # [B, 1]
    clipped = log_ratio.clamp(-clip_low, clip_high)  # [B, T]
    kept = sign * torch.minimum(sign * log_ratio, sign * clipped)  # [B, T] one-sided by the sign of A
    mean_log = ((kept * m).sum(-1) / n_tok).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # [B]
    J = seq_adv * mean_log.exp()  # [B]
    loss = _weighted(-J[:, None].expand_as(m), is_weights)  # [B, T]
    lr = log_ratio.detach()
    metrics = {"clip_frac_low": _masked_mean(((sign < 0) & (lr < -clip_low)).to(m.dtype), m),
               "clip_frac_high": _masked_mean(((sign > 0) & (lr > clip_high)).to(m.dtype), m)}
    total = aggregate(loss, m, agg, max_len=max_len, num_tokens=num_tokens, num_seqs=num_seqs)
    return total, metrics | _ratio_metrics(lr.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp(), m)


gmpo_loss.needs_sequence_advantages = True  # type: ignore[attr-defined]


def sapo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    agg: str = "seq_mean_token_mean",
    max_len: int | None = None,
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
    is_weights: Tensor | None = None,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SAPO, Soft Adaptive Policy Optimization (Qwen, https://arxiv.org/abs/2511.20347): a
    temperature-controlled sigmoid gate in place of the hard clip. Per token, with
    ``r = exp(logp - old_logp)``::

        tau = tau_pos if A > 0 else tau_neg
        f(r) = sigma(tau * (r - 1)) * 4 / tau,      l = -f(r) * A
        grad l = -A * 4 sigma(tau (r - 1)) (1 - sigma(tau (r - 1))) * r * grad(logp)

    so on-policy (``r = 1``) the gradient is ``-A grad(logp)``, and it decays smoothly as ``r``
    leaves 1, faster for the larger temperature (``tau_neg > tau_pos``: negative updates are damped
    more). Defaults 1.0 / 1.05 as in verl and TRL. The form is the peers' (verl's and TRL's
    ``sapo``); the paper's equation number was not checked here. Metrics: ``gate_weight_mean``
    (the mean gradient weight ``4 sigma (1 - sigma)``) and the ratio metrics.
    Shapes: ``logp``, ``old_logp``, ``completion_mask`` ``[B, T]``; ``advantages`` ``[B]`` or ``[B, T]``.

    >>> loss, _ = sapo_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    >>> loss  # r = 1: -sigma(0) * 4 / 1
    tensor(-2.)
    """
    if tau_pos <= 0 or tau_neg <= 0:
        raise ValueError(f"SAPO temperatures must be > 0, got tau_pos={tau_pos}, tau_neg={tau_neg}")
    m, adv, log_ratio = _inputs(logp, old_logp, advantages, completion_mask)
    ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()  # [B, T]
    tau = torch.where(adv > 0, adv.new_tensor(tau_pos), adv.new_tensor(tau_neg))  # [B, 1] or [B, T]
    gate = torch.sigmoid(tau * (ratio - 1.0))  # [B, T]
    loss = _weighted(-gate * (4.0 / tau) * adv, is_weights)  # [B, T]
    g = gate.detach()
    metrics = {"gate_weight_mean": _masked_mean(4.0 * g * (1.0 - g), m)}
    total = aggregate(loss, m, agg, max_len=max_len, num_tokens=num_tokens, num_seqs=num_seqs)
    return total, metrics | _ratio_metrics(ratio.detach(), m)


def _covariance(logp: Tensor, advantages: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(cov [B, T], valid [B, T] bool)``: ``(A - mean A) * (logp - mean logp)`` per token, each
    centred over the valid tokens (Cui et al. 2025, arXiv 2505.22617: the covariance of logp and A)."""
    valid = completion_mask.bool()
    lp = logp.detach().float()
    adv = advantages.detach().float()
    adv = (adv[:, None] if adv.dim() == 1 else adv).expand_as(lp)  # [B, T]
    m = valid.float()
    cov = (adv - _masked_mean(adv, m)) * (lp - _masked_mean(lp, m))  # [B, T]
    return cov, valid


def _first_k(score: Tensor, eligible: Tensor, k: Tensor) -> Tensor:
    """Bool ``[B, T]``: the ``k`` eligible entries with the smallest ``score`` (fewer if fewer are
    eligible); ``k`` may be a tensor (no ``.item()``)."""
    flat = torch.where(eligible, score, torch.inf).reshape(-1)  # [B*T]
    rank = torch.empty_like(flat, dtype=torch.long)
    rank[flat.argsort(stable=True)] = torch.arange(flat.numel(), device=flat.device)
    return eligible & (rank.view_as(score) < k)


def clip_cov_selection(logp: Tensor, advantages: Tensor, completion_mask: Tensor, *,
                       clip_ratio: float = 2e-4, cov_low: float = 1.0, cov_high: float = 5.0,
                       generator: torch.Generator | None = None) -> Tensor:
    """Clip-Cov's tokens, bool ``[B, T]``: ``max(1, floor(clip_ratio * N_valid))`` chosen uniformly
    at random (from ``generator``) among the valid tokens with ``cov_low < cov < cov_high``."""
    cov, valid = _covariance(logp, advantages, completion_mask)
    eligible = valid & (cov > cov_low) & (cov < cov_high)
    dev = generator.device if generator is not None else cov.device
    u = torch.rand(cov.shape, generator=generator, device=dev).to(cov.device)  # [B, T] random order
    k = (clip_ratio * valid.sum()).floor().clamp(min=1)
    return _first_k(u, eligible, k)


def kl_cov_selection(logp: Tensor, advantages: Tensor, completion_mask: Tensor, *,
                     kl_ratio: float = 2e-4, generator: torch.Generator | None = None) -> Tensor:
    """KL-Cov's tokens, bool ``[B, T]``: the ``max(1, floor(kl_ratio * N_valid))`` valid tokens of
    largest covariance (``generator`` unused: the choice is deterministic)."""
    cov, valid = _covariance(logp, advantages, completion_mask)
    k = (kl_ratio * valid.sum()).floor().clamp(min=1)
    return _first_k(-cov, valid, k)


def clip_cov_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    agg: str = "token_mean",
    max_len: int | None = None,
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
    is_weights: Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_ratio: float = 2e-4,
    cov_low: float = 1.0,
    cov_high: float = 5.0,
    generator: torch.Generator | None = None,
    selected: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs",
    https://arxiv.org/abs/2505.22617, Clip-Cov): the clipped surrogate of :func:`policy_loss`
    whose gradient is detached on a few high-covariance tokens. With
    ``cov_t = (A_t - mean A) (logp_t - mean logp)`` (means over the batch's valid tokens)::

        S = a random clip_ratio fraction (at least 1) of {t : cov_low < cov_t < cov_high}
        l_t = sg(l_ppo_t) if t in S else l_ppo_t

    The value is unchanged; only the gradient of ``S`` goes. Defaults are the paper's and verl's
    (``clip_ratio 2e-4``, bounds 1 and 5). ``S`` is :func:`clip_cov_selection` of this call
    (random draws from ``generator``), or ``selected`` (bool ``[B, T]``) when given: pass the whole
    batch's selection to each accumulated micro-batch, as with ``num_tokens``. Metrics:
    ``cov_selected_frac`` and the ratio metrics.
    Shapes: ``logp``, ``old_logp``, ``completion_mask`` ``[B, T]``; ``advantages`` ``[B]`` or ``[B, T]``;
    ``selected`` bool ``[B, T]``."""
    m, adv, log_ratio = _inputs(logp, old_logp, advantages, completion_mask)
    if selected is None:
        selected = clip_cov_selection(logp, advantages, completion_mask, clip_ratio=clip_ratio, cov_low=cov_low,
                                      cov_high=cov_high, generator=generator)
    ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()  # [B, T]
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high))  # [B, T]
    per_token = torch.where(selected.bool(), per_token.detach(), per_token)
    loss = _weighted(per_token, is_weights)
    total = aggregate(loss, m, agg, max_len=max_len, num_tokens=num_tokens, num_seqs=num_seqs)
    metrics = {"cov_selected_frac": _masked_mean(selected.to(m.dtype), m)}
    return total, metrics | _ratio_metrics(ratio.detach(), m)


clip_cov_loss.token_selection = clip_cov_selection  # type: ignore[attr-defined]


def kl_cov_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    agg: str = "token_mean",
    max_len: int | None = None,
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
    is_weights: Tensor | None = None,
    kl_ratio: float = 2e-4,
    kl_coef: float = 1.0,
    generator: torch.Generator | None = None,
    selected: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """KL-Cov (Cui et al. 2025, https://arxiv.org/abs/2505.22617, KL-Cov): the unclipped
    surrogate plus a KL penalty on the tokens of largest covariance. With ``r = exp(logp -
    old_logp)`` and ``cov_t`` as in :func:`clip_cov_loss`::

        S = the top kl_ratio fraction (at least 1) of the valid tokens by cov_t
        l_t = -A_t r_t + kl_coef * |logp_t - old_logp_t| * [t in S]

    Defaults as verl's (``kl_ratio 2e-4``, ``kl_coef 1``; the paper uses 2e-3 for 7B and 2e-4 for
    32B models). ``S`` is :func:`kl_cov_selection` of this call or ``selected`` (see
    :func:`clip_cov_loss`). Metrics: ``cov_selected_frac`` and the ratio metrics.
    Shapes: ``logp``, ``old_logp``, ``completion_mask`` ``[B, T]``; ``advantages`` ``[B]`` or ``[B, T]``;
    ``selected`` bool ``[B, T]``."""
    m, adv, log_ratio = _inputs(logp, old_logp, advantages, completion_mask)
    if selected is None:
        selected = kl_cov_selection(logp, advantages, completion_mask, kl_ratio=kl_ratio)
    log_ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # [B, T]
    ratio = log_ratio.exp()  # [B, T]
    per_token = -adv * ratio + kl_coef * log_ratio.abs() * selected.to(ratio.dtype)  # [B, T]
    loss = _weighted(per_token, is_weights)
    total = aggregate(loss, m, agg, max_len=max_len, num_tokens=num_tokens, num_seqs=num_seqs)
    metrics = {"cov_selected_frac": _masked_mean(selected.to(m.dtype), m)}
    return total, metrics | _ratio_metrics(ratio.detach(), m)


kl_cov_loss.token_selection = kl_cov_selection  # type: ignore[attr-defined]

POLICY_LOSSES: dict[str, Callable[..., tuple[Tensor, dict[str, Tensor]]]] = {
    "ppo_clip": policy_loss,
    "cispo": cispo_loss,
    "gmpo": gmpo_loss,
    "sapo": sapo_loss,
    "clip_cov": clip_cov_loss,
    "kl_cov": kl_cov_loss,
}
"""Policy losses by name (``algorithm.policy_loss``); every entry has :func:`policy_loss`'s signature."""

POLICY_LOSS_COMMON = ("agg", "max_len", "num_tokens", "num_seqs", "is_weights")
"""The keywords every entry takes that are not its own settings."""


def policy_loss_settings(name: str) -> dict[str, object]:
    """The settings of entry ``name`` and their defaults, read from its signature (the keyword-only
    arguments beyond :data:`POLICY_LOSS_COMMON`; ``generator`` and ``selected`` are the caller's).

    >>> policy_loss_settings("sapo")
    {'tau_pos': 1.0, 'tau_neg': 1.05}
    """
    if name not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {name!r}; valid: {', '.join(sorted(POLICY_LOSSES))}")
    params = inspect.signature(POLICY_LOSSES[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY
            and p.name not in POLICY_LOSS_COMMON + ("generator", "selected")}


def top_entropy_mask(entropy: Tensor, completion_mask: Tensor, rho: float) -> Tensor:
    """The high-entropy "forking" tokens, bool ``[B, T]`` ("Beyond the 80/20 Rule", Wang et al.
    2025, https://arxiv.org/abs/2506.01939): the valid tokens whose entropy is at least the
    ``1 - rho`` quantile (``torch.quantile``, linear interpolation) of the valid tokens' entropies.
    Only these carry policy gradient under ``algorithm.top_entropy_quantile: rho`` (the paper keeps
    the top 20%: ``rho = 0.2``). No valid token: all false.

    >>> top_entropy_mask(torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.7, 9.0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]), 0.4)
    tensor([[False,  True, False],
            [False,  True, False]])
    """
    if not 0 < rho <= 1:
        raise ValueError(f"rho = {rho}: the share of tokens kept must be in (0, 1]")
    valid = completion_mask.bool()
    values = entropy.detach()[valid].float()  # [n_valid]
    if values.numel() == 0:
        return valid
    threshold = torch.quantile(values, 1.0 - rho)  # linear interpolation
    return valid & (entropy.detach() >= threshold)


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
    "POLICY_LOSSES",
    "RATIO_LEVELS",
    "aggregate",
    "cispo_loss",
    "clip_cov_loss",
    "clip_cov_selection",
    "entropy_loss",
    "gmpo_loss",
    "kl_cov_loss",
    "kl_cov_selection",
    "policy_loss_settings",
    "sapo_loss",
    "top_entropy_mask",
    "kl_in_reward",
    "kl_penalty",
    "policy_loss",
    "truncated_is_weights",
    "value_loss",
]
