"""Summary statistics of scored completions: means that skip None, pass@k and mean@k per group."""

from __future__ import annotations

import math
from typing import Any, Hashable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 (arXiv 2107.03374): 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)
    (0.25, 1.0, 0.0)
    >>> round(pass_at_k(4, 1, 2), 4)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    0.5
    """
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def ks_for(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to n, and n itself.

    >>> ks_for(6)
    [1, 2, 4, 6]
    """
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


def group_stats(scores: Sequence[float | None], group_ids: Sequence[Hashable],
                threshold: float = 1.0) -> dict[str, float]:
    """pass@k and mean@k over groups (completions of one prompt).

    Items scored None are left out of their group. k runs over :func:`ks_for` of the smallest
    group size n; pass@k uses the unbiased estimator with c = completions scoring >= threshold;
    mean@n is the mean over groups of the group's mean score.

    >>> group_stats([1, 0, 0, 0, 1, 1], ["a", "a", "a", "b", "b", "b"])
    {'groups': 2, 'n': 3, 'pass@1': 0.5, 'pass@2': 0.8333, 'pass@3': 1.0, 'mean@3': 0.5}
    """
    groups: dict[Hashable, list[float]] = {}
    for s, g in zip(scores, group_ids):
        if s is not None:
            groups.setdefault(g, []).append(s)
    if not groups:
        return {"groups": 0}
    n = min(len(v) for v in groups.values())
    out: dict[str, float] = {"groups": len(groups), "n": n}
    for k in ks_for(n):
        vals = [pass_at_k(len(v), sum(x >= threshold for x in v), k) for v in groups.values()]
        out[f"pass@{k}"] = round(sum(vals) / len(vals), 4)
    out[f"mean@{n}"] = round(sum(sum(v) / len(v) for v in groups.values()) / len(groups), 4)
    return out


def summarize_rows(rows: Sequence[dict[str, Any]], reward_keys: Sequence[str],
                   group_ids: Sequence[Hashable] | None, threshold: float = 1.0) -> dict[str, Any]:
    """Per-reward and combined statistics of scored output rows (see `grpo-kit score`)."""
    out: dict[str, Any] = {"rows": len(rows), "rewards": {}}
    for key in [*reward_keys, "reward"]:
        vals = [r["reward"] if key == "reward" else r["rewards"].get(key) for r in rows]
        errs = [] if key == "reward" else [(r.get("reward_errors") or {}).get(key) for r in rows]
        present = [v for v in vals if v is not None]
        st: dict[str, Any] = {
            "mean": round(sum(present) / len(present), 6) if present else None,
            "count": len(present),
            "none": sum(v is None for v in vals) - sum(e is not None for e in errs),
        }
        if key == "reward":  # no combined reward because a reward failed (scoring.on_error: exclude)
            st["excluded"] = sum(r["reward"] is None and bool(r.get("reward_errors")) for r in rows)
            st["none"] -= st["excluded"]
        else:
            st["errors"] = sum(e is not None and not e.startswith("timeout") for e in errs)
            st["timeouts"] = sum(e is not None and e.startswith("timeout") for e in errs)
        if group_ids is not None:
            gs = group_stats(vals, group_ids, threshold)
            if key == "reward":  # a weighted sum has no natural "solved" threshold: means only
                gs = {k: v for k, v in gs.items() if not k.startswith("pass@")}
            st.update(gs)
        out["rewards"][key] = st
    return out
