"""MATH (Hendrycks et al. 2021): competition problems; by default ``HuggingFaceH4/MATH-500``.

MATH-500 (the 500-problem subset of "Let's Verify Step by Step") has only a ``test`` split with
``problem``, ``solution`` and ``answer`` columns, so by default *both* splits read it: set
``args: {dataset: ..., train_split: train}`` to train on a MATH training set. When a source has
no ``answer`` column (the original MATH layout), the gold is the last ``\\boxed{}`` of
``solution``; rows with neither are dropped. Default rewards: ``math_accuracy`` 1.0 +
``think_format`` 0.5.
"""

from __future__ import annotations

from pydantic import Field

from grpo_kit.config import ConfigError, Strict
from rewards.math import extract_answer
from tasks.base import Task, load_source, parse_args, r1_rewards, split_names


class MathArgs(Strict):
    """Settings of the ``math`` task (``args:``)."""

    dataset: str = Field("HuggingFaceH4/MATH-500", description="hub id or a local file/folder")
    dataset_config: str | None = None
    train_split: str = Field("test", description="MATH-500 has only 'test'")
    test_split: str = "test"


def math_gold(row: dict) -> str:
    """The gold answer of a MATH row: ``answer`` if present, else the last ``\\boxed{}`` of ``solution``.

    >>> math_gold({"problem": "?", "solution": "So $x = \\\\boxed{\\\\frac{1}{2}}$."})
    '\\\\frac{1}{2}'
    """
    if row.get("answer") not in (None, ""):
        return str(row["answer"]).strip()
    return extract_answer(row.get("solution") or "") or ""


def math_task(cfg) -> Task:
    """Build the ``math`` task from a :class:`tasks.config.TaskConfig`."""
    args = parse_args(MathArgs, cfg)
    splits, names = split_names(args.dataset, args.train_split, args.test_split)

    def build(split: str):
        ds = load_source(args.dataset, args.dataset_config, names[split])
        where = f"task 'math', dataset {args.dataset!r}, split {names[split]!r}"
        if "problem" not in ds.column_names or not {"answer", "solution"} & set(ds.column_names):
            raise ConfigError(f"{where}: the dataset needs a 'problem' column and an 'answer' or "
                              f"'solution' column; its columns: {', '.join(ds.column_names)}")
        ds = ds.map(lambda row: {"question": row["problem"], "answer": math_gold(row)})
        return ds.filter(lambda row: row["answer"] != "")

    task = Task("math", build, prompt_style=cfg.prompt_style or "base", template=cfg.template,
                system_prompt=cfg.system_prompt, splits=splits, limit=cfg.limit)
    task.default_rewards = cfg.rewards or r1_rewards(task)
    return task
