"""Tasks: prompts with gold answers, and the rewards that score completions for them.

``get_task(TaskConfig(name="countdown"))`` builds a built-in task; a ``TaskConfig`` with
``dataset:`` builds one from any dataset (see :mod:`tasks.config`). ``task.load("train")`` returns
a ``datasets.Dataset`` with ``prompt`` and ``answer`` columns (see :class:`tasks.base.Task`).

>>> task = get_task(TaskConfig(name="arithmetic"))
>>> row = task.load("train")[37]
>>> row["prompt"], row["answer"], [r.name for r in task.default_rewards]
('3+7=', '10', ['exact_match'])
>>> get_task(TaskConfig.model_construct(name="nope", dataset=None))
Traceback (most recent call last):
...
grpo_kit.errors.ConfigError: unknown task 'nope'; known tasks: arithmetic, countdown, gsm8k, math, reasoning_gym (or define one with `dataset:`)
"""

from __future__ import annotations

from grpo_kit.errors import ConfigError
from tasks.base import Task
from tasks.catalog import TASKS
from tasks.config import TaskConfig
from tasks.dataset import dataset_task

__all__ = ["TASKS", "Task", "TaskConfig", "get_task"]


def get_task(cfg: TaskConfig) -> Task:
    """The task a config names: a built-in one by ``name``, or one defined by ``dataset``."""
    if cfg.name is None:
        return dataset_task(cfg)
    if cfg.name not in TASKS:
        raise ConfigError(f"unknown task {cfg.name!r}; known tasks: {', '.join(sorted(TASKS))} "
                          "(or define one with `dataset:`)")
    return TASKS[cfg.name](cfg)
