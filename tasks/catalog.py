"""The built-in tasks by name: name -> factory taking the task's config (its ``args`` are the
task's settings). Below :mod:`tasks.config`, which checks a name against it at load."""

from __future__ import annotations

from typing import Callable

from tasks.arithmetic import arithmetic_task
from tasks.base import Task
from tasks.countdown import countdown_task
from tasks.gsm8k import gsm8k_task
from tasks.math import math_task
from tasks.reasoning_gym import reasoning_gym_task

TASKS: dict[str, Callable[..., Task]] = {
    "arithmetic": arithmetic_task,
    "countdown": countdown_task,
    "gsm8k": gsm8k_task,
    "math": math_task,
    "reasoning_gym": reasoning_gym_task,
}
