"""A task defined in YAML: any dataset with a question and an answer column.

>>> from tasks.config import TaskConfig
>>> t = dataset_task(TaskConfig(dataset="org/some-dataset", question_column="problem", prompt_style="chat"))
>>> t.name, t.splits, [r.name for r in t.default_rewards]
('org/some-dataset', ('train', 'test'), ['math_accuracy', 'think_format'])
"""

from __future__ import annotations

from tasks.base import Task, load_source, r1_rewards, split_names


def dataset_task(cfg) -> Task:
    """Build a task from the ``dataset`` fields of a :class:`tasks.config.TaskConfig`.

    Default rewards (when ``rewards`` is empty): ``math_accuracy`` 1.0, plus ``think_format`` 0.5
    when the prompt asks for ``<think>`` (the default base and chat prompts do).
    """
    splits, names = split_names(cfg.dataset, cfg.train_split, cfg.test_split)
    task = Task(cfg.dataset, lambda split: load_source(cfg.dataset, cfg.dataset_config, names[split]),
                prompt_style=cfg.prompt_style or "base", template=cfg.template, system_prompt=cfg.system_prompt,
                question_column=cfg.question_column, answer_column=cfg.answer_column, splits=splits,
                limit=cfg.limit)
    task.default_rewards = cfg.rewards or r1_rewards(task)
    return task
