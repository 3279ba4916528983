"""Countdown (TinyZero): reach ``target`` from 3-4 numbers with + - * / , each number used once.

Problems are generated, not downloaded, and always solvable: the numbers (1..``max_number``) are
combined pairwise in random order by random operations (``-`` only when the result is positive,
``/`` only when it is exact), and the result becomes the target when it is an integer in
1..``max_target``; the expression is kept as the row's ``answer`` (one solution among possibly
many). The train and test splits are drawn from independent seeded streams and are disjoint:
a test problem (same multiset of numbers and target) never appears in train.

Rows: ``question``, ``nums``, ``target``, ``answer``. Default reward: ``countdown`` 1.0 with
``format_score`` 0.1 (TinyZero's credit for a well-formed but wrong ``<answer>``).

>>> import random
>>> make_problem(random.Random(0), min_numbers=3, max_numbers=4, max_number=99, max_target=1000)
([61, 72, 13, 46], 22, '(61 - (72 - 46)) - 13')
"""

from __future__ import annotations

import random
from fractions import Fraction

from pydantic import Field, model_validator

from grpo_kit.config import ConfigError, RewardConfig, Strict
from tasks.base import Task, parse_args

QUESTION = (
    "Using the numbers {nums}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> "
    "tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>"
)
"""TinyZero's countdown instruction (its trailing period comes from the R1 template's ``{question}.``)."""


class CountdownArgs(Strict):
    """Settings of the ``countdown`` task (``args:``)."""

    n_train: int = Field(10_000, ge=1, description="training problems")
    n_test: int = Field(500, ge=1, description="test problems (disjoint from train)")
    seed: int = Field(0, description="seed of both splits")
    min_numbers: int = Field(3, ge=2, le=6)
    max_numbers: int = Field(4, ge=2, le=6)
    max_number: int = Field(99, ge=2, description="numbers are drawn from 1..max_number")
    max_target: int = Field(1000, ge=1, description="targets are integers in 1..max_target")

    @model_validator(mode="after")
    def _order(self) -> "CountdownArgs":
        if self.min_numbers > self.max_numbers:
            raise ValueError(f"min_numbers ({self.min_numbers}) must be <= max_numbers ({self.max_numbers})")
        return self


def _combine(rng: random.Random, x: Fraction, y: Fraction) -> tuple[str, Fraction]:
    """A random operation on ``x`` and ``y`` (in that order) whose result is a positive integer."""
    ops = [("+", x + y), ("*", x * y)]
    if x > y:
        ops.append(("-", x - y))
    if y != 0 and (x / y).denominator == 1:
        ops.append(("/", x / y))
    return rng.choice(ops)


def make_problem(rng: random.Random, *, min_numbers: int, max_numbers: int, max_number: int,
                 max_target: int) -> tuple[list[int], int, str]:
    """One solvable problem: ``(nums, target, equation)`` with ``equation`` using each number once."""
    for _ in range(10_000):
        nums = [rng.randint(1, max_number) for _ in range(rng.randint(min_numbers, max_numbers))]
        items = [(Fraction(n), str(n)) for n in nums]
        while len(items) > 1:
            i, j = rng.sample(range(len(items)), 2)
            (x, ex), (y, ey) = items[i], items[j]
            if x < y:
                (x, ex), (y, ey) = (y, ey), (x, ex)
            op, value = _combine(rng, x, y)
            items = [it for k, it in enumerate(items) if k not in (i, j)] + [(value, f"({ex} {op} {ey})")]
        value, expr = items[0]
        if 1 <= value <= max_target:
            return nums, int(value), expr[1:-1]
    raise ConfigError(f"countdown: found no target in 1..{max_target} in 10,000 tries; raise max_target")


def generate(args: CountdownArgs, split: str) -> list[dict]:
    """The rows of a split; test problems that occur in train are skipped (disjoint splits)."""
    taken: set[tuple] = set()
    if split == "test":
        taken = {(tuple(sorted(r["nums"])), r["target"]) for r in generate(args, "train")}
    rng = random.Random(f"countdown/{split}/{args.seed}")
    want = args.n_train if split == "train" else args.n_test
    rows: list[dict] = []
    for _ in range(want * 20):
        nums, target, equation = make_problem(rng, min_numbers=args.min_numbers, max_numbers=args.max_numbers,
                                              max_number=args.max_number, max_target=args.max_target)
        key = (tuple(sorted(nums)), target)
        if key in taken:
            continue
        taken.add(key)
        rows.append({"question": QUESTION.format(nums=nums, target=target), "nums": nums, "target": target,
                     "answer": equation})
        if len(rows) == want:
            return rows
    raise ConfigError(f"countdown: only {len(rows)} distinct {split} problems found, {want} asked; "
                      "lower n_train/n_test or widen max_number/max_target")


def countdown_task(cfg) -> Task:
    """Build the ``countdown`` task from a :class:`tasks.config.TaskConfig`."""
    from datasets import Dataset

    args = parse_args(CountdownArgs, cfg)
    task = Task("countdown", lambda split: Dataset.from_list(generate(args, split)),
                prompt_style=cfg.prompt_style or "base", template=cfg.template,
                system_prompt=cfg.system_prompt, limit=cfg.limit)
    task.default_rewards = cfg.rewards or [RewardConfig(name="countdown", weight=1.0, args={"format_score": 0.1})]
    return task
