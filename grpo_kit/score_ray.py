"""Scoring chunks of rows, in this process or on Ray actors: the executors of ``grpo-kit score``.

:mod:`grpo_kit.score_file` reads the input, cuts it into chunks of whole groups, checks a resumed
output and writes rows in order; an executor only scores chunks. Both executors run the same
:class:`ChunkScorer` (a :class:`~grpo_kit.scoring.Scorer` with the run's rewards and scoring
config) on the same chunks, so rewards, timeouts and ``on_error`` act the same and the output is
the same, row for row. :class:`LocalScorer` runs it here; :class:`RayScorer` runs one per Ray actor
(each actor reserves ``scoring.workers`` CPUs for its worker processes) and returns results in input
order, with a bounded number of chunks in flight (two per actor).

On Ray every node needs grpo-kit and the rewards' dependencies installed. A reward given as
``file.py:function`` is loaded on the actors from the same path: made absolute here, it works on a
local cluster or a shared file system; on other clusters copy the file to that path on every node,
or submit with ``ray job submit --working-dir DIR`` (a relative path then resolves in DIR there).
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from grpo_kit.config import RewardConfig, ScoringConfig
from grpo_kit.errors import ConfigError
from grpo_kit.scoring import RewardFailure, Scorer

# (completions, columns, group ids or None): the rows of a chunk the scorer sees, as plain lists
Payload = tuple[list, dict[str, list], list | None]


class Job(Protocol):
    payload: Payload | None  # None: nothing to score in this chunk (its rows are in the output already)


class ChunkScorer:
    """A :class:`Scorer` over chunk payloads; returns each row's output fields (``score_fields``)."""

    def __init__(self, rewards: list[RewardConfig], scoring: ScoringConfig):
        self.scorer = Scorer(rewards, scoring)

    def score(self, payload: Payload) -> list[dict[str, Any]]:
        rb = self.scorer.score(*payload)
        return [rb.score_fields(i) for i in range(rb.size)]

    def restarts(self) -> int:
        return self.scorer.pool.restarts if self.scorer.pool else 0

    def close(self) -> None:
        self.scorer.close()


class LocalScorer:
    """The executor of a local run: one :class:`ChunkScorer` in this process."""

    def __init__(self, rewards: list[RewardConfig], scoring: ScoringConfig):
        self.chunk_scorer = ChunkScorer(rewards, scoring)
        self.group_rewards = self.chunk_scorer.scorer.group_rewards

    def map(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, list[dict]]]:
        for job in jobs:
            yield job, self.chunk_scorer.score(job.payload) if job.payload else []

    def restarts(self) -> int:
        return self.chunk_scorer.restarts()

    def __enter__(self) -> "LocalScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.chunk_scorer.close()


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install grpo-kit[ray]") from None
    return ray


class RayScorer:
    """The executor of ``--ray [ADDRESS]``: :class:`ChunkScorer` actors on a Ray cluster.

    ``address``: ``"local"`` starts a local cluster (stopped at the end); ``"auto"`` or
    ``HOST:PORT`` (``ray://HOST:PORT`` for Ray Client) connects to a running one. When this process
    is connected to Ray already, that connection is used. The rewards are bound here first, so a bad
    name or setting fails before any actor starts."""

    def __init__(self, rewards: list[RewardConfig], scoring: ScoringConfig, address: str):
        self._ray = ray = import_ray()
        self.group_rewards = Scorer(rewards, scoring.model_copy(update={"workers": 0})).group_rewards
        self._own = not ray.is_initialized()
        if self._own:
            ray.init(address=address)
        rewards = _portable(rewards, ray.get_runtime_context().runtime_env.get("working_dir"))
        total = max(1, int(ray.cluster_resources().get("CPU", 1)))
        cpus = min(total, max(1, scoring.workers))
        n = total // cpus
        actor = ray.remote(num_cpus=cpus)(ChunkScorer)
        self.actors = [actor.remote(rewards, scoring) for _ in range(n)]

    def map(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, list[dict]]]:
        """Results in job order; at most two chunks per actor in flight."""
        in_flight: deque = deque()
        turn = 0
        for job in jobs:
            ref = None
            if job.payload:
                ref = self.actors[turn % len(self.actors)].score.remote(job.payload)
                turn += 1
            in_flight.append((job, ref))
            if len(in_flight) >= 2 * len(self.actors):
                yield self._result(*in_flight.popleft())
        while in_flight:
            yield self._result(*in_flight.popleft())

    def _result(self, job: Job, ref) -> tuple[Job, list[dict]]:
        return job, self._get(ref) if ref is not None else []

    def _get(self, ref):
        """``ray.get``; a user-fixable error on an actor is raised here as itself, in one line."""
        errors = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except errors.RayTaskError as e:
            if isinstance(e.cause, (ConfigError, RewardFailure)):
                raise e.cause from None
            raise
        except errors.RayActorError as e:  # e.g. a reward file missing on that node
            if not e.actor_init_failed:
                raise
            last = re.sub(r"\x1b\[[0-9;]*m", "", e.error_msg).strip().splitlines()[-1]
            raise ConfigError(f"a scorer on Ray could not start: {last} (each node needs grpo-kit, the "
                              "rewards' packages and their files: see grpo_kit/score_ray.py)") from None

    def restarts(self) -> int:
        return sum(self._get([a.restarts.remote() for a in self.actors]))

    def __enter__(self) -> "RayScorer":
        return self

    def __exit__(self, *exc) -> None:
        closing = [a.close.remote() for a in self.actors]  # stop their reward workers
        self._ray.wait(closing, num_returns=len(closing), timeout=10)
        for a in self.actors:
            self._ray.kill(a)
        if self._own:
            self._ray.shutdown()


def _portable(rewards: list[RewardConfig], working_dir: str | None) -> list[RewardConfig]:
    """``file.py:function`` rewards with the file's absolute path, unless the job ships a
    working_dir (relative paths resolve there on every node). The key (label) stays the one the
    user wrote, so the output is the same as a local run's."""
    out = []
    for r in rewards:
        target, _, attr = r.name.rpartition(":")
        if not working_dir and target.endswith(".py") and Path(target).expanduser().is_file():
            r = r.model_copy(update={"name": f"{Path(target).expanduser().resolve()}:{attr}", "label": r.key})
        out.append(r)
    return out
