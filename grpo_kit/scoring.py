"""Scoring: rewards by name, weighted, executed in worker processes under hard timeouts.

This is the one path by which completions get rewards: in training, in eval, in the Python script
and in ``grpo-kit score``. :meth:`Scorer.score_batch` fills a
:class:`~grpo_kit.records.RolloutBatch` in place; :meth:`Scorer.score` wraps plain lists in one.

    >>> from grpo_kit.config import RewardConfig, ScoringConfig
    >>> with Scorer([RewardConfig(name="think_format"), RewardConfig(name="math_accuracy", weight=2)],
    ...             ScoringConfig(workers=1)) as scorer:
    ...     rb = scorer.score(["<think>2+2</think><answer>4</answer>", "no tags, 5"], {"answer": ["4", "4"]})
    >>> rb.rewards["math_accuracy"], rb.reward
    ([1.0, 0.0], [3.0, 0.0])

**A failed reward** (it raised, timed out, died, or returned a wrong number of values or a NaN) is
recorded in ``reward_errors`` and counted; what it does to the combined reward is
``scoring.on_error``: ``exclude`` (the default) leaves the completion without a combined reward
(None, and no gradient in training), ``zero`` counts the failed reward as 0 in the weighted sum,
``fail`` raises :class:`RewardFailure`. A failure never silently drops out of the sum: a penalty
reward that times out does not turn into "no penalty".
"""

from __future__ import annotations

import sys
from typing import Any, Hashable, Sequence

from grpo_kit.config import RewardConfig, ScoringConfig
from grpo_kit.contract import BoundReward, call_reward
from grpo_kit.errors import ConfigError
from grpo_kit.records import RolloutBatch
from grpo_kit.registry import bind_reward
from grpo_kit.workers import Outcome, WorkerPool


class RewardFailure(RuntimeError):
    """A reward failed under ``scoring.on_error: fail``; the message names the reward and the reason."""


class Scorer:
    """Rewards with weights, run by a worker pool. Use as a context manager (it owns processes).

    Scopes (see :mod:`grpo_kit.contract`): ``item`` rewards run one completion per task under the
    per-item timeout; ``group`` rewards once per group under timeout x group size; ``batch`` rewards
    (learned models) in this process on the whole batch. Each task carries only the columns its
    reward takes.
    """

    def __init__(self, rewards: list[RewardConfig], scoring: ScoringConfig | None = None):
        if not rewards:
            raise ConfigError("no rewards given: name at least one (e.g. --reward math_accuracy)")
        self.rewards = rewards
        self.scoring = scoring or ScoringConfig()
        # Resolve and bind every reward here first, so a bad name or setting fails before any work.
        self.bound: dict[str, BoundReward] = {r.key: bind_reward(r.name, r.args, r.scope) for r in rewards}
        self.scopes = {k: b.scope for k, b in self.bound.items()}
        self.weights = {r.key: r.weight for r in rewards}
        # user functions left at the default scope: checked once against a whole-group call
        self._probe = {r.key for r in rewards if r.scope is None and ":" in r.name and self.scopes[r.key] == "item"}
        self.warnings: list[str] = []
        needs_pool = any(s != "batch" for s in self.scopes.values())
        self.pool = WorkerPool(self.scoring.workers) if needs_pool and self.scoring.workers > 0 else None

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    @property
    def group_rewards(self) -> list[str]:
        return [k for k, s in self.scopes.items() if s == "group"]

    def score(self, completions: Sequence, columns: dict[str, Sequence] | None = None,
              group_ids: Sequence[Hashable] | None = None, on_progress=None) -> RolloutBatch:
        """Score ``completions`` (texts or chat message lists) with every reward.

        ``columns`` maps column names to lists aligned with ``completions``. ``group_ids`` (one per
        completion) say which completions share a prompt, for ``group`` rewards; without them the
        whole call is one group."""
        n = len(completions)
        columns = {k: list(v) for k, v in (columns or {}).items()}
        for k, v in columns.items():
            if len(v) != n:
                raise ValueError(f"column {k!r} has {len(v)} values for {n} completions")
        if group_ids is not None and len(group_ids) != n:
            raise ValueError(f"{len(group_ids)} group ids for {n} completions")
        index: dict[Hashable, int] = {}
        gidx = [index.setdefault(g, len(index)) for g in (group_ids if group_ids is not None else [0] * n)]
        rb = RolloutBatch(prompts=[None] * len(index), prompt_ids=[[] for _ in index], group_index=gidx,
                          completions=list(completions), item_columns=columns)
        return self.score_batch(rb, on_progress=on_progress)

    def score_batch(self, rb: RolloutBatch, on_progress=None) -> RolloutBatch:
        """Fill ``rb.rewards``, ``rb.reward_errors`` and ``rb.reward`` in place; return ``rb``."""
        n = rb.size
        scores = {k: [None] * n for k in self.bound}
        errors: dict[str, list[str | None]] = {k: [None] * n for k in self.bound}
        expanded: dict[str, list] = {}  # each column expanded to [N] once, only if some reward takes it

        def cols_for(b: BoundReward) -> dict[str, list]:
            names = rb.column_names() if b.columns is None else rb.column_names() & b.columns
            for k in names - expanded.keys():
                expanded[k] = rb.column(k)
            return {k: expanded[k] for k in names}

        groups = rb.groups()
        tasks, where = [], []
        timeout = self.scoring.timeout
        for key, b in self.bound.items():
            cols = cols_for(b)
            if b.scope == "batch":
                self._record(key, list(range(n)), _run_inline(b, rb.completions, cols), scores, errors)
                continue
            units = [[i] for i in range(n)] if b.scope == "item" else [g for g in groups if g]
            for idx in units:
                tasks.append(self._task(b, idx, rb, cols))
                where.append((key, idx))
        for (key, idx), out in zip(where, self._run(tasks, where, on_progress)):
            self._record(key, idx, out, scores, errors)
        self._probe_groups(rb, groups, scores, errors, cols_for)
        rb.rewards, rb.reward_errors = scores, errors
        rb.reward = combine(self.weights, scores, errors, self.scoring.on_error)
        return rb

    def _task(self, b: BoundReward, idx: list[int], rb: RolloutBatch, cols: dict[str, list]) -> tuple:
        """A worker task: the reward's name and settings, the completions ``idx``, their columns."""
        return ((b.spec, b.args), [rb.completions[i] for i in idx], {k: [v[i] for i in idx] for k, v in cols.items()},
                self.scoring.timeout * len(idx))

    def _run(self, tasks: list, where: list, on_progress=None) -> list[Outcome]:
        if self.pool is not None:
            return self.pool.run(tasks, on_done=on_progress)
        return [_run_inline(self.bound[key], t[1], t[2]) for (key, _), t in zip(where, tasks)]

    def _probe_groups(self, rb: RolloutBatch, groups, scores, errors, cols_for) -> None:
        """Once per user reward left at the default scope: call it on a whole group whose items all
        scored, and warn if the scores differ from the item-by-item ones (see :meth:`_check_probe`)."""
        tasks, where = [], []
        for key in sorted(self._probe):
            idx = next((g for g in groups if len(g) > 1 and all(errors[key][i] is None for i in g)), None)
            if idx is not None:
                tasks.append(self._task(self.bound[key], idx, rb, cols_for(self.bound[key])))
                where.append((key, idx))
        for (key, idx), out in zip(where, self._run(tasks, where)):
            self._check_probe(key, idx, out, scores)
            self._probe.discard(key)

    @staticmethod
    def _record(key: str, idx: list[int], out: Outcome, scores, errors) -> None:
        for j, i in enumerate(idx):
            if out.status == "ok":
                scores[key][i] = out.values[j]
            else:
                errors[key][i] = f"{out.status}: {out.reason}"

    def _check_probe(self, key: str, idx: list[int], out: Outcome, scores) -> None:
        """Warn when a reward called on a whole group scores differently than item by item: it
        compares completions (as a TRL batch reward may) and needs ``scope: group`` or ``batch``."""
        if out.status != "ok":
            return
        itemwise = [scores[key][i] for i in idx]
        if any(i is None or a is None for i, a in zip(itemwise, out.values)):
            same = all((i is None) == (a is None) for i, a in zip(itemwise, out.values))
        else:
            same = all(abs(i - a) <= 1e-9 * max(1.0, abs(i)) for i, a in zip(itemwise, out.values))
        if not same:
            msg = (f"reward {key!r} scores a group of {len(idx)} completions differently when called on "
                   f"all of them at once ({_short(out.values)}) than one at a time ({_short(itemwise)}): it "
                   "compares completions, as a TRL batch reward may. It is being called one completion at "
                   "a time (scope: item); set `scope: group` (or `batch`) on it in the config")
            self.warnings.append(msg)
            print(f"grpo-kit: warning: {msg}", file=sys.stderr)


def _short(vals: list) -> str:
    shown = ", ".join("None" if v is None else f"{v:.4g}" for v in vals[:4])
    return f"[{shown}{', ...' if len(vals) > 4 else ''}]"


def _run_inline(fn, completions: list, columns: dict) -> Outcome:
    try:
        return Outcome("ok", values=call_reward(fn, completions, columns))
    except Exception as e:  # recorded per item, like a worker's failure
        return Outcome("error", reason=f"{type(e).__name__}: {e}"[:2000])


def combine(weights: dict[str, float], scores: dict[str, list], errors: dict[str, list],
            on_error: str = "exclude") -> list[float | None]:
    """The combined reward per completion: the weighted sum of the non-null scores (None if all are
    null), with failed rewards handled by ``on_error`` (see the module docstring).

    >>> w, s = {"acc": 1.0, "penalty": 0.5}, {"acc": [1.0, 1.0, None], "penalty": [-1.0, None, None]}
    >>> e = {"acc": [None, None, None], "penalty": [None, "timeout: 5 s", None]}
    >>> combine(w, s, e, "exclude"), combine(w, s, e, "zero")
    ([0.5, None, None], [0.5, 1.0, None])
    """
    out: list[float | None] = []
    n = len(next(iter(scores.values()))) if scores else 0
    for i in range(n):
        failed = [k for k in scores if errors[k][i] is not None]
        if failed and on_error == "fail":
            k = failed[0]
            raise RewardFailure(f"reward {k!r} failed on completion {i}: {errors[k][i]} "
                                "(scoring.on_error: fail; `exclude` or `zero` would go on)")
        if failed and on_error == "exclude":
            out.append(None)
            continue
        vals = [(weights[k], s[i]) for k, s in scores.items() if s[i] is not None]
        vals += [(weights[k], 0.0) for k in failed]  # on_error: zero
        out.append(sum(w * v for w, v in vals) if vals else None)
    return out
