"""``TaskConfig``: which prompts to train on, as written in a run's YAML under ``task:``.

Either a built-in task by ``name`` (settings in ``args``)::

    task:
      name: countdown
      args: {n_train: 2000, seed: 1}

or a dataset defined in YAML::

    task:
      dataset: data/my_questions.jsonl      # hub id, .jsonl/.json/.parquet/.csv, or a save_to_disk folder
      question_column: problem
      answer_column: answer
      prompt_style: chat
      rewards:
        - {name: math_accuracy, weight: 1.0}

>>> TaskConfig(name="arithmetic").name
'arithmetic'
>>> from grpo_kit.config import build_config
>>> build_config({"name": "countdown", "dataset": "data.jsonl"}, TaskConfig)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
grpo_kit.errors.ConfigError: <config>: <top level>: Value error, a task needs either `name` ... not both and not neither
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from grpo_kit.config import RewardConfig, Strict
from tasks.catalog import TASKS
from tasks.templates import PromptStyle

DATASET_ONLY = ("dataset_config", "train_split", "test_split", "question_column", "answer_column")
"""Fields that describe a YAML-defined dataset; a built-in task takes its dataset settings in `args`."""


class TaskConfig(Strict):
    """A training task: a built-in one by ``name`` or a dataset described here."""

    name: str | None = Field(None, description="a built-in task (gsm8k, math, countdown, arithmetic, reasoning_gym); "
                             "leave unset to define a task with `dataset`")
    args: dict[str, Any] = Field(default_factory=dict, description="settings of the built-in task "
                                 "(e.g. arithmetic: max_operand, ops; countdown: n_train, seed)")
    dataset: str | None = Field(None, description="hub dataset id, a local .jsonl/.json/.parquet/.csv "
                                "file, a folder of such files, or a `save_to_disk` folder; `{split}` in "
                                "a path is replaced by the split name")
    dataset_config: str | None = Field(None, description="hub dataset configuration (e.g. 'main')")
    train_split: str = Field("train", description="split read as the training set")
    test_split: str = Field("test", description="split read as the evaluation set")
    question_column: str = Field("question", description="column with the question; the template's "
                                 "`{question}` placeholder reads it")
    answer_column: str = Field("answer", description="column with the gold answer (passed to rewards "
                               "as `answer`)")
    template: str | None = Field(None, description="str.format template over the row's columns, e.g. "
                                 "'Q: {question}\\nA:'; default: the prompt style's template")
    prompt_style: PromptStyle | None = Field(None, description="'base': the R1-Zero prompt, a string "
                                             "ending in '<think>'; 'chat': system + user messages; "
                                             "'raw': the template alone (default: the task's style)")
    system_prompt: str | None = Field(None, description="system message of the chat style (default: "
                                      "the R1 instruction; '' for none)")
    rewards: list[RewardConfig] = Field(default_factory=list, description="rewards for this task; "
                                        "empty: the task's default rewards")
    limit: int | None = Field(None, ge=1, description="read at most this many rows of each split")

    @model_validator(mode="after")
    def _check(self) -> "TaskConfig":
        if (self.name is None) == (self.dataset is None):
            raise ValueError(
                "a task needs either `name` (a built-in task: " + ", ".join(sorted(TASKS)) + ") "
                "or `dataset` (a hub id or a local file/folder), not both and not neither"
            )
        if self.name is not None:
            if self.name not in TASKS:
                raise ValueError(f"unknown task {self.name!r}; known tasks: {', '.join(sorted(TASKS))} "
                                 "(or define one with `dataset:`)")
            # a saved config holds every field: only a value other than the default is an error
            given = [f for f in DATASET_ONLY
                     if f in self.model_fields_set and getattr(self, f) != type(self).model_fields[f].default]
            if given:
                raise ValueError(f"{', '.join(given)}: only for a `dataset` task; the built-in task "
                                 f"{self.name!r} takes its dataset settings in `args`")
            TASKS[self.name](self)  # a built-in validates its `args` when it is built
        elif self.args:
            raise ValueError("`args` are settings of a built-in task; a `dataset` task has none")
        if self.system_prompt is not None and self.prompt_style not in ("chat", None):
            raise ValueError(f"system_prompt only applies to prompt_style 'chat', not {self.prompt_style!r}")
        return self
