"""Summary statistics of scored completions: means that skip None, pass@k and mean@k per group.

:func:`group_stats` and :func:`summarize_rows` take every score at once; :class:`GroupStats` and
:class:`RunningSummary` are their streaming forms, fed a group or a chunk of rows at a time in
memory that does not grow with the rows, and give the same numbers (the same sums, in the same
order) when the rows of each group arrive together.
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import groupby
from typing import Any, Hashable, Iterable, Sequence


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


@lru_cache(maxsize=1024)
def _pass_row(n: int, c: int, m: int) -> tuple[float, ...]:
    """pass@1 .. pass@m of a group of n with c solved."""
    return tuple(pass_at_k(n, c, k) for k in range(1, m + 1))


class GroupStats:
    """:func:`group_stats` fed one group at a time.

    The smallest group so far bounds k, so it keeps running sums of pass@1 .. pass@n_min (the
    final k are among them) and the sum of group means: O(n_min) memory however many groups.

    >>> acc = GroupStats()
    >>> acc.add([1, 0, 0]); acc.add([0, 1, 1])
    >>> acc.result() == group_stats([1, 0, 0, 0, 1, 1], ["a", "a", "a", "b", "b", "b"])
    True
    """

    def __init__(self, threshold: float = 1.0):
        self.threshold = threshold
        self.groups = 0
        self.pass_sums: list[float] = []  # [k - 1]: the sum over groups of pass@k
        self.mean_sum = 0.0

    def add(self, scores: Iterable[float | None]) -> None:
        """One group's scores (None: left out, as in :func:`group_stats`)."""
        v = [s for s in scores if s is not None]
        if not v:
            return
        n = len(v)
        m = min(n, len(self.pass_sums)) if self.groups else n  # k beyond the smallest group is never needed
        row = _pass_row(n, sum(x >= self.threshold for x in v), m)
        if not self.groups:
            self.pass_sums = [0] * n  # int 0, as sum() starts: the same float sums as group_stats
        del self.pass_sums[len(row):]
        for k, p in enumerate(row):
            self.pass_sums[k] += p
        self.mean_sum += sum(v) / n
        self.groups += 1

    def result(self) -> dict[str, float]:
        if not self.groups:
            return {"groups": 0}
        n = len(self.pass_sums)
        out: dict[str, float] = {"groups": self.groups, "n": n}
        for k in ks_for(n):
            out[f"pass@{k}"] = round(self.pass_sums[k - 1] / self.groups, 4)
        out[f"mean@{n}"] = round(self.mean_sum / self.groups, 4)
        return out


class RunningSummary:
    """:func:`summarize_rows` over rows fed a chunk at a time; the rows of a group must all come in
    one chunk, next to each other (``grpo-kit score`` cuts its chunks between groups).

    >>> rows = [{"rewards": {"acc": 1.0}, "reward": 1.0}, {"rewards": {"acc": 0.0}, "reward": 0.0},
    ...         {"rewards": {"acc": None}, "reward": None, "reward_errors": {"acc": "timeout: 5 s"}}]
    >>> run = RunningSummary(["acc"], grouped=True)
    >>> run.add(rows[:2], ["a", "a"]); run.add(rows[2:], ["b"])
    >>> run.result() == summarize_rows(rows, ["acc"], ["a", "a", "b"])
    True
    """

    def __init__(self, reward_keys: Sequence[str], grouped: bool, threshold: float = 1.0):
        self.keys = [*reward_keys, "reward"]
        self.rows = 0
        self.stats = {k: {"sum": 0, "count": 0, "nulls": 0, "errors": 0, "timeouts": 0, "excluded": 0}
                      for k in self.keys}
        self.groups = {k: GroupStats(threshold) for k in self.keys} if grouped else None

    def add(self, rows: Sequence[dict[str, Any]], group_ids: Sequence[Hashable] | None = None) -> None:
        self.rows += len(rows)
        for key in self.keys:
            st = self.stats[key]
            vals = [r["reward"] if key == "reward" else r["rewards"].get(key) for r in rows]
            for v in vals:
                if v is None:
                    st["nulls"] += 1
                else:
                    st["sum"] += v
                    st["count"] += 1
            if key == "reward":
                st["excluded"] += sum(r["reward"] is None and bool(r.get("reward_errors")) for r in rows)
            else:
                errs = [e for r in rows if (e := (r.get("reward_errors") or {}).get(key)) is not None]
                st["timeouts"] += sum(e.startswith("timeout") for e in errs)
                st["errors"] += len(errs) - sum(e.startswith("timeout") for e in errs)
            if self.groups is not None:
                for _, members in groupby(zip(group_ids, vals), key=lambda gv: gv[0]):
                    self.groups[key].add(v for _, v in members)

    def result(self) -> dict[str, Any]:
        """The dict :func:`summarize_rows` returns for all the rows added."""
        out: dict[str, Any] = {"rows": self.rows, "rewards": {}}
        for key in self.keys:
            s = self.stats[key]
            st: dict[str, Any] = {"mean": round(s["sum"] / s["count"], 6) if s["count"] else None,
                                  "count": s["count"]}
            if key == "reward":
                st["none"] = s["nulls"] - s["excluded"]
                st["excluded"] = s["excluded"]
            else:
                st["none"] = s["nulls"] - s["errors"] - s["timeouts"]
                st["errors"], st["timeouts"] = s["errors"], s["timeouts"]
            if self.groups is not None:
                gs = self.groups[key].result()
                if key == "reward":  # as summarize_rows: means only
                    gs = {k: v for k, v in gs.items() if not k.startswith("pass@")}
                st.update(gs)
            out["rewards"][key] = st
        return out
