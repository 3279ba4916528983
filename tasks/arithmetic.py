"""Arithmetic facts for the tiny demo model: the prompt ``"3+5="``, the gold ``"8"``.

Small enough for the ~124k-parameter demo model to learn with GRPO on 2 CPU cores (see
:mod:`grpo_kit.demo`): by default the 100 facts ``a+b`` with a, b in 0..9. The prompt style is
``"raw"`` (no R1 template: the demo tokenizer knows only digits, ``+`` and ``=``). ``"-"`` facts
are generated with a >= b only (no negative answers); note the demo tokenizer has no ``-`` or ``*``.

Both splits hold the *same* facts: this is a memorisation demo (does RL find the right answer
among 19 for each prompt?), not a test of generalisation. When there are more facts than
``max_examples``, both splits are the same seeded sample.

Rows: ``question`` (``"3+5="``), ``answer`` (``"8"``). Default reward: ``exact_match`` 1.0.

>>> facts(ArithmeticArgs())[:3], len(facts(ArithmeticArgs()))
([('0+0=', '0'), ('0+1=', '1'), ('0+2=', '2')], 100)
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field, model_validator

from grpo_kit.config import RewardConfig, Strict
from tasks.base import Task, parse_args

_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class ArithmeticArgs(Strict):
    """Settings of the ``arithmetic`` task (``args:``)."""

    min_operand: int = Field(0, ge=0, description="smallest operand")
    max_operand: int = Field(9, ge=0, le=100_000, description="largest operand")
    ops: list[Literal["+", "-", "*"]] = Field(["+"], min_length=1, description="operations")
    max_examples: int = Field(10_000, ge=1, description="more facts than this: a seeded sample")
    seed: int = Field(0, description="seed of the sample (unused when all facts fit)")

    @model_validator(mode="after")
    def _order(self) -> "ArithmeticArgs":
        if self.min_operand > self.max_operand:
            raise ValueError(f"min_operand ({self.min_operand}) must be <= max_operand ({self.max_operand})")
        return self


def facts(args: ArithmeticArgs) -> list[tuple[str, str]]:
    """``(question, answer)`` pairs in a fixed order (a seeded sample when there are too many)."""
    span = range(args.min_operand, args.max_operand + 1)
    count = len(span) ** 2 * len(args.ops)  # an upper bound; "-" keeps a >= b only
    if count > 4 * args.max_examples:  # sample pairs without listing them all
        rng = random.Random(f"arithmetic/{args.seed}")
        seen: dict[str, str] = {}
        while len(seen) < args.max_examples:
            a, b, op = rng.choice(span), rng.choice(span), rng.choice(args.ops)
            if op != "-" or a >= b:
                seen.setdefault(f"{a}{op}{b}=", str(_APPLY[op](a, b)))
        return list(seen.items())
    pairs = [(f"{a}{op}{b}=", str(_APPLY[op](a, b))) for op in args.ops for a in span for b in span
             if op != "-" or a >= b]
    if len(pairs) > args.max_examples:
        pairs = random.Random(f"arithmetic/{args.seed}").sample(pairs, args.max_examples)
    return pairs


def arithmetic_task(cfg) -> Task:
    """Build the ``arithmetic`` task from a :class:`tasks.config.TaskConfig`."""
    from datasets import Dataset

    args = parse_args(ArithmeticArgs, cfg)
    rows = [{"question": q, "answer": a} for q, a in facts(args)]
    task = Task("arithmetic", lambda split: Dataset.from_list(rows), prompt_style=cfg.prompt_style or "raw",
                template=cfg.template, system_prompt=cfg.system_prompt, limit=cfg.limit)
    task.default_rewards = cfg.rewards or [RewardConfig(name="exact_match", weight=1.0)]
    return task
