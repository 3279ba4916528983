"""Statistics of a reward on preference pairs: pairwise accuracy, margins, calibration.

Pure Python over the two score lists, shared by ``rm train``'s evaluations and ``rm eval``.

**Ties** (r_c == r_r, common for rule rewards that give 0 or 1) are counted on their own
(``ties``) and count one half in ``accuracy``: the expected accuracy of breaking the tie by a coin
flip. ``accuracy_strict`` counts them as wrong, as RewardBench does (``chosen > rejected``).

**Calibration.** A Bradley-Terry model says P(chosen preferred) = sigmoid(r_c - r_r). The pairs
(ties left out) are binned by |r_c - r_r|; in each bin ``predicted`` is the mean of
sigmoid(|r_c - r_r|), the probability the model gives to the higher-scored completion being the
chosen one, and ``observed`` the share of pairs where it is. A calibrated model has the two equal
(``ece``: their gap, weighted by the bins' counts). It reads as a probability only for a reward
trained with that loss; for a rule reward it says how often a given score gap picks the chosen one.

    >>> s = pair_stats([2.0, 1.0, 0.5, 1.0], [0.0, 1.0, 1.5, 0.0], ["a", "a", "b", "b"])
    >>> s["accuracy"], s["accuracy_strict"], s["ties"], s["per_category"]["b"]["accuracy"]
    (0.625, 0.5, 1, 0.5)
"""

from __future__ import annotations

import math
from typing import Sequence

BIN_EDGES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, math.inf)
"""Edges of the |r_c - r_r| bins of the calibration table."""


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _mean_std(xs: Sequence[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def _accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, float | int | None]:
    wins = sum(c > r for c, r in zip(chosen, rejected))
    ties = sum(c == r for c, r in zip(chosen, rejected))
    n = len(chosen)
    return {"pairs": n, "wins": wins, "ties": ties, "losses": n - wins - ties,
            "accuracy": (wins + 0.5 * ties) / n if n else None, "accuracy_strict": wins / n if n else None}


def calibration(chosen: Sequence[float], rejected: Sequence[float], edges: Sequence[float] = BIN_EDGES) -> dict:
    """The calibration table (see the module docstring): one row per non-empty bin, and ``ece``."""
    rows, total, gap = [], 0, 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = [(c, r) for c, r in zip(chosen, rejected) if c != r and lo <= abs(c - r) < hi]
        if not inside:
            continue
        predicted = sum(_sigmoid(abs(c - r)) for c, r in inside) / len(inside)
        observed = sum(c > r for c, r in inside) / len(inside)
        rows.append({"abs_gap_low": lo, "abs_gap_high": hi if math.isfinite(hi) else None, "pairs": len(inside),
                     "predicted": predicted, "observed": observed})
        total += len(inside)
        gap += len(inside) * abs(predicted - observed)
    return {"bins": rows, "ece": gap / total if total else None}


def pair_stats(chosen: Sequence[float], rejected: Sequence[float], categories: Sequence[str | None] | None = None) -> dict:
    """Accuracy (overall and per category), margin and reward statistics and the calibration
    table of the scores of ``chosen`` and ``rejected`` completions (one per pair, aligned)."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen scores for {len(rejected)} rejected ones")
    gaps = [c - r for c, r in zip(chosen, rejected)]
    g_mean, g_std = _mean_std(gaps)
    r_mean, r_std = _mean_std(list(chosen) + list(rejected))
    out: dict = {**_accuracy(chosen, rejected),
                 "margin": {"mean": g_mean, "std": g_std, "min": min(gaps, default=None),
                            "max": max(gaps, default=None),
                            "median": sorted(gaps)[len(gaps) // 2] if gaps else None},
                 "reward": {"mean": r_mean, "std": r_std, "chosen_mean": _mean_std(chosen)[0],
                            "rejected_mean": _mean_std(rejected)[0]},
                 "calibration": calibration(chosen, rejected)}
    if categories is not None and any(c is not None for c in categories):
        per: dict[str, list[int]] = {}
        for i, c in enumerate(categories):
            per.setdefault(c if c is not None else "(none)", []).append(i)
        out["per_category"] = {c: _accuracy([chosen[i] for i in idx], [rejected[i] for i in idx])
                               for c, idx in sorted(per.items())}
    return out
