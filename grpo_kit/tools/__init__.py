"""Tools a model can call while it reasons: :func:`calculator` evaluates arithmetic exactly;
:func:`run_python` runs model-written code in a bubblewrap sandbox (:mod:`grpo_kit.tools.sandbox`);
:func:`tool` marks a user's function as a tool (:mod:`grpo_kit.tools.base`). The multi-turn
rollout that calls them is :mod:`grpo_kit.rollout.multiturn`."""

from grpo_kit.tools.base import STATUSES, ToolOutput, ToolSpec, tool
from grpo_kit.tools.calculator import calculator
from grpo_kit.tools.sandbox import LIMITS, SandboxResult, SandboxUnavailable, run_python

__all__ = ["LIMITS", "STATUSES", "SandboxResult", "SandboxUnavailable", "ToolOutput", "ToolSpec", "calculator",
           "run_python", "tool"]
