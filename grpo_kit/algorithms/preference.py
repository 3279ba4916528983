"""The Bradley-Terry loss of a reward model on preference pairs, as a pure tensor function.

No model, no config, no I/O, no ``.item()``. Dimensions: P pairs (a chosen and a rejected
completion of one prompt each).

Papers:
    Bradley-Terry  Bradley & Terry 1952; as an RM loss: Ouyang et al. 2022, https://arxiv.org/abs/2203.02155
    margin         Touvron et al. 2023 (Llama 2), https://arxiv.org/abs/2307.09288, section 3.2.2
    centering      Eisenstein et al. 2023, Helping or Herding?, https://arxiv.org/abs/2312.09244
"""

from __future__ import annotations

import torch
from torch import Tensor


def bradley_terry_loss(
    chosen: Tensor,
    rejected: Tensor,
    margin: Tensor | None = None,
    *,
    center_coef: float = 0.0,
    num_pairs: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(1/P) sum_p [ -log sigmoid(r_c - r_r - m) + center_coef * (r_c + r_r)^2 ]``.

    ``chosen`` (r_c) and ``rejected`` (r_r): ``[P]`` scalar rewards; ``margin`` (m): ``[P]`` or
    None (0). The first term is the Bradley-Terry negative log-likelihood of "chosen preferred",
    with Llama 2's margin (a pair rated far apart must be scored at least m apart before its loss
    flattens); the second is the centering regulariser of Eisenstein et al. (TRL's
    ``center_rewards_coefficient``), which pins the rewards' mean near 0 without changing their
    differences. ``num_pairs``: the divisor, the pairs of the whole optimizer step when a step is
    split into micro-batches (their gradients then sum to the whole batch's); default P.

    Returns the loss and detached metrics: ``accuracy`` (share of pairs with r_c > r_r, a tie
    counting 1/2), ``margin_mean`` (mean r_c - r_r), ``reward_mean``.

    >>> loss, m = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]))
    >>> round(float(loss), 4), float(m["accuracy"])  # -log sigmoid(1)
    (0.3133, 1.0)
    >>> loss, _ = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]), center_coef=0.5)
    >>> round(float(loss), 4)  # -log sigmoid(0) + 0.5 * 1^2
    1.1931
    """
    if chosen.shape != rejected.shape or chosen.dim() != 1:
        raise ValueError(f"expected chosen and rejected rewards of one shape [P], got {tuple(chosen.shape)} "
                         f"and {tuple(rejected.shape)}")
    diff = chosen - rejected  # [P]
    if margin is not None:
        diff = diff - margin.to(diff.dtype)
    per_pair = -torch.nn.functional.logsigmoid(diff)  # [P]
    if center_coef:
        per_pair = per_pair + center_coef * (chosen + rejected).pow(2)
    denom = chosen.numel() if num_pairs is None else num_pairs
    loss = per_pair.sum() / denom
    with torch.no_grad():
        gap = chosen - rejected
        metrics = {"accuracy": ((gap > 0).float() + 0.5 * (gap == 0).float()).mean(),
                   "margin_mean": gap.mean(), "reward_mean": torch.cat([chosen, rejected]).mean()}
    return loss, metrics
