"""GSM8K (Cobbe et al. 2021, ``openai/gsm8k`` config ``main``): grade-school word problems.

The hub rows are ``question`` and ``answer``, a worked solution ending in ``#### 72``. The task's
``answer`` is the number after ``####`` with thousands commas removed; the full text is kept as
``solution``. Default rewards: ``math_accuracy`` 1.0 (``fallback: last_number``: a completion with
no ``####``, box or answer tag is scored on its last number, as GSM8K's own scorers do) +
``think_format`` 0.5.
"""

from __future__ import annotations

from pydantic import Field

from grpo_kit.config import Strict
from tasks.base import Task, check_columns, load_source, parse_args, r1_rewards, split_names


class Gsm8kArgs(Strict):
    """Settings of the ``gsm8k`` task (``args:``)."""

    dataset: str = Field("openai/gsm8k", description="hub id or a local file/folder shaped like it")
    dataset_config: str | None = Field("main", description="hub configuration ('main' or 'socratic')")
    train_split: str = "train"
    test_split: str = "test"


def gsm8k_gold(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after the last ``####``, commas removed.

    >>> gsm8k_gold("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\n#### 1,072")
    '1072'
    >>> gsm8k_gold("no marker")
    ''
    """
    head, sep, tail = solution.rpartition("####")
    return tail.strip().replace(",", "") if sep else ""


def gsm8k_task(cfg) -> Task:
    """Build the ``gsm8k`` task from a :class:`tasks.config.TaskConfig`."""
    args = parse_args(Gsm8kArgs, cfg)
    splits, names = split_names(args.dataset, args.train_split, args.test_split)

    def build(split: str):
        ds = load_source(args.dataset, args.dataset_config, names[split])
        check_columns(ds, {"question": "the GSM8K question", "answer": "the GSM8K solution, '... #### N'"},
                      f"task 'gsm8k', dataset {args.dataset!r}, split {names[split]!r}")
        ds = ds.map(lambda row: {"solution": row["answer"], "answer": gsm8k_gold(row["answer"])})
        return ds.filter(lambda row: row["answer"] != "")

    task = Task("gsm8k", build, prompt_style=cfg.prompt_style or "base", template=cfg.template,
                system_prompt=cfg.system_prompt, splits=splits, limit=cfg.limit)
    task.default_rewards = cfg.rewards or _gsm8k_rewards(task)
    return task


def _gsm8k_rewards(task: Task):
    """The R1 rewards, with ``math_accuracy`` reading the last number when a completion has no
    marked answer (``fallback: last_number``), as GSM8K scorers do after ``####``."""
    rewards = r1_rewards(task)
    for r in rewards:
        if r.name == "math_accuracy":
            r.args.setdefault("fallback", "last_number")
    return rewards
