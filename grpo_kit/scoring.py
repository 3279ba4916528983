"""Scoring: rewards by name, weighted, executed in worker processes under hard timeouts.

This is the one path by which completions get rewards, in training and in `grpo-kit score`.

    >>> from grpo_kit.config import RewardConfig, ScoringConfig
    >>> with Scorer([RewardConfig(name="think_format"), RewardConfig(name="math_accuracy", weight=2)],
    ...             ScoringConfig(workers=1)) as scorer:
    ...     res = scorer.score(["<think>2+2</think><answer>4</answer>", "no tags, 5"], {"answer": ["4", "4"]})
    >>> res.scores["math_accuracy"], res.combined
    ([1.0, 0.0], [3.0, 0.0])
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from grpo_kit.config import ConfigError, RewardConfig, ScoringConfig
from grpo_kit.registry import get_reward, reward_scope, reward_settings
from grpo_kit.workers import Outcome, WorkerPool, call_reward


def _accepted_columns(fn: Callable) -> set[str] | None:
    """Names of data columns a function takes; None when it takes ``**kwargs`` (all of them)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def bind_reward(spec: str, args: dict[str, Any]) -> Callable[..., list]:
    """Resolve ``spec`` and bind its settings; the result takes ``(completions, **columns)`` and
    passes a function only the columns it declares (unless it takes ``**kwargs``)."""
    fn = get_reward(spec)
    settings = reward_settings(fn)
    for k in args:
        if k not in settings:
            known = ", ".join(settings) or "none"
            raise ConfigError(f"reward {spec!r} has no setting {k!r}; its settings: {known}")
    bound = functools.partial(fn, **args) if args else fn
    accepted = _accepted_columns(fn)
    if accepted is not None:
        accepted -= set(args)

    @functools.wraps(fn)
    def call(completions: list, **columns: Any) -> list:
        if accepted is not None:
            columns = {k: v for k, v in columns.items() if k in accepted}
        return bound(completions, **columns)

    call.reward_scope = reward_scope(fn)  # type: ignore[attr-defined]
    return call


@dataclass
class ScoreResult:
    """Scores of one call: per reward (by key) a list aligned with the completions."""

    scores: dict[str, list[float | None]]
    errors: dict[str, list[str | None]]  # "timeout: ..." / "error: ..." where a reward failed
    combined: list[float | None]  # weighted sum over the non-null scores; None if all are null
    weights: dict[str, float] = field(default_factory=dict)

    def row(self, i: int) -> dict[str, Any]:
        """The output fields of completion ``i``: rewards, reward and (if any) reward_errors."""
        out: dict[str, Any] = {
            "rewards": {k: v[i] for k, v in self.scores.items()},
            "reward": self.combined[i],
        }
        errs = {k: v[i] for k, v in self.errors.items() if v[i] is not None}
        if errs:
            out["reward_errors"] = errs
        return out


def _row_columns(columns: dict[str, Sequence], idx: Sequence[int]) -> dict[str, list]:
    cols = {k: [v[i] for i in idx] for k, v in columns.items()}
    if "prompt" in cols and "prompts" not in cols:  # TRL passes prompts=
        cols["prompts"] = cols["prompt"]
    return cols


class Scorer:
    """Rewards with weights, run by a worker pool. Use as a context manager (it owns processes).

    Scopes (see :mod:`grpo_kit.registry`): ``item`` rewards run one completion per task under the
    per-item timeout; ``group`` rewards once per group under timeout x group size; ``batch``
    rewards (learned models) in this process on the whole call.
    """

    def __init__(self, rewards: list[RewardConfig], scoring: ScoringConfig | None = None):
        if not rewards:
            raise ConfigError("no rewards given: name at least one (e.g. --reward math_accuracy)")
        self.rewards = rewards
        self.scoring = scoring or ScoringConfig()
        # Resolve and bind every reward here first, so a bad name or setting fails before any work.
        self._local = {r.key: bind_reward(r.name, r.args) for r in rewards}
        self.scopes = {r.key: self._local[r.key].reward_scope for r in rewards}
        self.weights = {r.key: r.weight for r in rewards}
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
              group_ids: Sequence[Hashable] | None = None, on_progress=None) -> ScoreResult:
        """Score ``completions`` (texts or chat message lists) with every reward.

        ``columns`` maps column names to lists aligned with ``completions``. ``group_ids`` (one per
        completion) say which completions share a prompt, for ``group`` rewards; without them the
        whole call is one group."""
        n = len(completions)
        columns = dict(columns or {})
        for k, v in columns.items():
            if len(v) != n:
                raise ValueError(f"column {k!r} has {len(v)} values for {n} completions")
        groups = _groups(group_ids, n)
        scores = {r.key: [None] * n for r in self.rewards}
        errors: dict[str, list[str | None]] = {r.key: [None] * n for r in self.rewards}
        tasks, where = [], []
        timeout = self.scoring.timeout
        for r in self.rewards:
            scope = self.scopes[r.key]
            if scope == "batch":
                self._run_local(r.key, list(range(n)), completions, columns, scores, errors)
                continue
            ref = (r.name, tuple(sorted(r.args.items())))
            units = [[i] for i in range(n)] if scope == "item" else groups
            for idx in units:
                tasks.append((ref, [completions[i] for i in idx], _row_columns(columns, idx),
                              timeout * len(idx)))
                where.append((r.key, idx))
        if self.pool is not None:
            outcomes = self.pool.run(tasks, on_done=on_progress)
        else:
            outcomes = [_run_inline(self._local[key], t[1], t[2]) for (key, _), t in zip(where, tasks)]
        for (key, idx), out in zip(where, outcomes):
            for j, i in enumerate(idx):
                if out.status == "ok":
                    scores[key][i] = out.values[j]
                else:
                    errors[key][i] = f"{out.status}: {out.reason}"
        combined = [_weighted(self.weights, scores, i) for i in range(n)]
        return ScoreResult(scores, errors, combined, dict(self.weights))

    def _run_local(self, key, idx, completions, columns, scores, errors) -> None:
        out = _run_inline(self._local[key], [completions[i] for i in idx], _row_columns(columns, idx))
        for j, i in enumerate(idx):
            if out.status == "ok":
                scores[key][i] = out.values[j]
            else:
                errors[key][i] = f"{out.status}: {out.reason}"


def _run_inline(fn, completions: list, columns: dict) -> Outcome:
    try:
        return Outcome("ok", values=call_reward(fn, completions, columns))
    except Exception as e:  # recorded per item, like a worker's failure
        return Outcome("error", reason=f"{type(e).__name__}: {e}"[:2000])


def _groups(group_ids: Sequence[Hashable] | None, n: int) -> list[list[int]]:
    if group_ids is None:
        return [list(range(n))] if n else []
    if len(group_ids) != n:
        raise ValueError(f"{len(group_ids)} group ids for {n} completions")
    out: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        out.setdefault(g, []).append(i)
    return list(out.values())


def _weighted(weights: dict[str, float], scores: dict[str, list], i: int) -> float | None:
    vals = [(weights[k], s[i]) for k, s in scores.items() if s[i] is not None]
    return sum(w * v for w, v in vals) if vals else None
