"""Sampling and scoring a step's prompt groups: the rollouts a training step consumes.

The same code runs in the trainer's process (``train.async_level: 0``) and in the rollout process
of asynchronous training (:mod:`grpo_kit.train.pipeline`), so a step's prompts, seeds and
completions do not depend on where they were sampled: only on the step and the weights used.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from grpo_kit.errors import ConfigError
from grpo_kit.records import RolloutBatch
from grpo_kit.rollout.multiturn import tool_metrics
from grpo_kit.train.models import encode_prompt


class PromptCursor:
    """Position in the prompt stream: a seeded permutation per epoch, resumable."""

    def __init__(self, n: int, seed: int):
        if n == 0:
            raise ConfigError("the task's train split has no rows")
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            chunk = perm[self.pos:self.pos + k - len(out)].tolist()
            out += chunk
            self.pos += len(chunk)
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, s: dict[str, int]) -> None:
        self.epoch, self.pos = s["epoch"], s["pos"]


def step_seed(cfg, step: int, round_: int) -> int:
    """The sampling seed of ``round_`` of ``step`` (round 99: the update's minibatch shuffle)."""
    base = cfg.sampling.seed if cfg.sampling.seed is not None else cfg.train.seed
    return (base * 1_000_003 + step * 1009 + round_) % (2**31)


class Rollouts:
    """The scored prompt groups of each step: prompts from the task's stream (:class:`PromptCursor`),
    completions from ``sampler``, rewards from ``scorer``. Under data parallelism (``world``) each
    rank samples and scores its contiguous share of each round and the shares are gathered."""

    def __init__(self, cfg, dataset, tokenizer, sampler, scorer, algorithm, world, say: Callable[..., None]):
        self.cfg, self.dataset, self.tokenizer = cfg, dataset, tokenizer
        self.sampler, self.scorer, self.algorithm, self.world, self.say = sampler, scorer, algorithm, world, say
        self.cursor = PromptCursor(len(dataset), cfg.train.seed)
        self._warned: set[str] = set()

    def sample(self, rows: list[dict[str, Any]], seed: int, keys: list[int] | None = None, *,
               version: int = 0) -> RolloutBatch:
        """G completions for each dataset row, attributed to its prompt and columns; ``keys`` seed
        each prompt (see :func:`~grpo_kit.rollout.base.prompt_seed`); ``version``: the weights'."""
        chat_tools = getattr(self.sampler, "chat_tools", None)
        if chat_tools and not all(isinstance(r["prompt"], list) for r in rows):
            raise ConfigError("tools.format: chat needs chat prompts (lists of messages); this task's are text "
                              "(use tools.format: fenced or tag, or task.prompt_style: chat)")
        prompt_ids = [encode_prompt(self.tokenizer, r["prompt"], tools=chat_tools) for r in rows]
        rb = self.sampler.sample(prompt_ids, seed, keys)
        columns = {k: [r.get(k) for r in rows] for k in sorted({k for r in rows for k in r} - {"prompt"})}
        return rb.with_prompts([r["prompt"] for r in rows], columns, policy_version=version)

    def score(self, rb: RolloutBatch, step: int) -> None:
        self.scorer.score_batch(rb)
        for name, errs in rb.reward_errors.items():
            bad = [e for e in errs if e is not None]
            if bad and name not in self._warned:
                self._warned.add(name)
                self.say(f"reward {name!r} failed on {len(bad)}/{len(errs)} completions at step "
                         f"{step}: {bad[0]} (counted in metrics as rewards/{name}/errors; "
                         "further failures of this reward are only counted)", every_rank=True)

    def sample_and_score(self, idx: list[int], seed: int, *, step: int, version: int
                         ) -> tuple[RolloutBatch, float, float]:
        """The scored groups of the dataset rows ``idx``, in that order, and the seconds spent
        sampling and scoring. Every rank ends with the same whole record (token ids and scores)."""
        mine = list(self.world.share(len(idx)))
        # a rank with no prompt this round still samples one (the round's first) and drops it:
        # the hf sampler's sharded forward passes need every rank
        keys = mine or [0]
        t0 = time.perf_counter()
        rb = self.sample([self.dataset[idx[k]] for k in keys], seed, keys, version=version)
        t1 = time.perf_counter()
        if mine:
            self.score(rb, step)
        else:
            rb = rb.select_groups([])
        if self.world.size > 1:
            parts = [RolloutBatch.from_dict(p) for p in self.world.gather_objects(rb.to_dict())]
            rb = RolloutBatch.concat([p for p in parts if p.num_groups])
        return rb, t1 - t0, time.perf_counter() - t1

    def collect(self, step: int, *, version: int) -> tuple[RolloutBatch, dict[str, float]]:
        """B scored groups for ``step``, sampled with the weights of ``version``; with dynamic
        sampling, groups without signal (the algorithm's skip rule) are replaced by fresh ones for
        up to ``max_sampling_rounds`` rounds, then the batch is filled with them."""
        algo, B = self.cfg.algorithm, self.cfg.train.prompts_per_step
        kept: list[RolloutBatch] = []
        dropped: list[RolloutBatch] = []
        n_kept = 0
        t_sample = t_score = 0.0
        rounds = algo.max_sampling_rounds if algo.dynamic_sampling else 1
        for r in range(rounds):
            rb, ts, tc = self.sample_and_score(self.cursor.take(B - n_kept), step_seed(self.cfg, step, r),
                                               step=step, version=version)
            t_sample, t_score = t_sample + ts, t_score + tc
            has_signal = [self.algorithm.group_has_signal([rb.reward[i] for i in g]) for g in rb.groups()]
            keep = [b for b, ok in enumerate(has_signal) if ok or not algo.dynamic_sampling]
            kept.append(rb.select_groups(keep) if len(keep) < rb.num_groups else rb)
            dropped.append(rb.select_groups([b for b in range(rb.num_groups) if b not in keep]))
            n_kept += len(keep)
            if n_kept >= B:
                break
        filled = max(0, B - n_kept)
        spare = RolloutBatch.concat(dropped)
        batch = RolloutBatch.concat(kept + [spare.select_groups(range(min(filled, spare.num_groups)))])
        return batch, {"time/sample": t_sample, "time/score": t_score, "dynamic/rounds": r + 1,
                       "dynamic/filled_groups": filled if algo.dynamic_sampling else 0, **tool_metrics(batch)}
