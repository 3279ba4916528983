"""`grpo-kit rm eval`: a reward model and rule rewards on one table of preference pairs.

Every scorer goes through :class:`grpo_kit.scoring.Scorer`, the path of training and ``score``:
the model as the ``reward_model`` reward (so it is scored exactly as in training: any
``AutoModelForSequenceClassification``, its chat template, its label 0), each ``--reward`` as
itself. The chosen and the rejected completion of a pair form one group (for group rewards) and
get the pair's columns (``prompt`` and the data's other columns, e.g. ``answer``). A pair where a
reward returned None ("does not apply") or failed is left out of that reward's statistics and
counted (``excluded``), never scored as 0. Statistics: :func:`grpo_kit.rm.stats.pair_stats`
(ties counted on their own and as one half in ``accuracy``).
"""

from __future__ import annotations

import math
from typing import Any

from grpo_kit.config import RewardConfig, ScoringConfig
from grpo_kit.rm.data import read_pairs
from grpo_kit.rm.stats import pair_stats
from grpo_kit.scoring import Scorer

MODEL_KEY = "model"


def evaluate_rewards(data: str, *, model: str | None = None, rewards: list[str] = (), split: str = "test",
                     batch_size: int = 16, workers: int = 1, timeout: float = 5.0) -> dict[str, Any]:
    """The summary of ``rm eval``: per scorer (``model`` and each reward by name) the pair statistics."""
    pairs = read_pairs(data, split)
    configs = [RewardConfig(name="reward_model", label=MODEL_KEY, args={"model": model, "batch_size": batch_size})
               ] if model else []
    configs += [RewardConfig(name=name) for name in rewards]
    n = len(pairs)
    columns: dict[str, list] = {}
    if all(p.prompt is not None for p in pairs):
        columns["prompt"] = [p.prompt for p in pairs] * 2
    for k in sorted({k for p in pairs for k in p.columns}):
        columns[k] = [p.columns.get(k) for p in pairs] * 2
    with Scorer(configs, ScoringConfig(workers=workers, timeout=timeout)) as scorer:
        rb = scorer.score([p.chosen for p in pairs] + [p.rejected for p in pairs], columns,
                          group_ids=list(range(n)) * 2)
    summary: dict[str, Any] = {"data": str(data), "pairs": n, "scorers": {}}
    for cfg in configs:
        scores, errors = rb.rewards[cfg.key], rb.reward_errors[cfg.key]
        keep, none, failed = [], 0, []
        for i in range(n):
            err = errors[i] or errors[n + i]
            if err:
                failed.append(err)
            elif scores[i] is None or scores[n + i] is None:
                none += 1
            else:
                keep.append(i)
        stats = pair_stats([scores[i] for i in keep], [scores[n + i] for i in keep], [pairs[i].category for i in keep])
        stats["excluded"] = {"none": none, "errors": len(failed), "error_examples": failed[:5]}
        summary["scorers"][cfg.key if cfg.key != MODEL_KEY else f"model {model}"] = stats
    return summary


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_table(summary: dict[str, Any]) -> str:
    """The summary as text: one row per scorer, then per category, then the calibration tables."""
    lines = [f"{summary['pairs']} pairs from {summary['data']}",
             f"{'scorer':<32} {'pairs':>6} {'accuracy':>9} {'strict':>7} {'ties':>5} {'excluded':>9} "
             f"{'margin mean':>12} {'margin std':>11} {'ECE':>6}"]
    for name, s in summary["scorers"].items():
        ex = s["excluded"]["none"] + s["excluded"]["errors"]
        lines.append(f"{name[-32:]:<32} {s['pairs']:>6} {_f(s['accuracy']):>9} {_f(s['accuracy_strict']):>7} "
                     f"{s['ties']:>5} {ex:>9} {_f(s['margin']['mean']):>12} {_f(s['margin']['std']):>11} "
                     f"{_f(s['calibration']['ece']):>6}")
    cats = sorted({c for s in summary["scorers"].values() for c in s.get("per_category", {})})
    if cats:
        lines += ["", "accuracy per category (ties count 1/2)",
                  f"{'scorer':<32} " + " ".join(f"{c[:14]:>14}" for c in cats)]
        for name, s in summary["scorers"].items():
            per = s.get("per_category", {})
            lines.append(f"{name[-32:]:<32} " + " ".join(
                f"{_f(per[c]['accuracy']) + ' (' + str(per[c]['pairs']) + ')' if c in per else '-':>14}" for c in cats))
    for name, s in summary["scorers"].items():
        lines += ["", f"calibration of {name}: P(the higher-scored is the chosen one) by |r_c - r_r|",
                  f"{'|r_c - r_r|':>14} {'pairs':>6} {'predicted':>10} {'observed':>9}"]
        for b in s["calibration"]["bins"]:
            span = (f"{b['abs_gap_low']:.2f}-{b['abs_gap_high']:.2f}" if b["abs_gap_high"] is not None
                    else f">= {b['abs_gap_low']:.2f}")
            lines.append(f"{span:>14} {b['pairs']:>6} "
                         f"{_f(b['predicted']):>10} {_f(b['observed']):>9}")
    return "\n".join(lines)
