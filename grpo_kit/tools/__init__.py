"""Tools a model can call while it reasons: :func:`calculator` evaluates arithmetic exactly;
:func:`run_python` runs model-written code in a bubblewrap sandbox (:mod:`grpo_kit.tools.sandbox`)."""

from grpo_kit.tools.calculator import calculator
from grpo_kit.tools.sandbox import LIMITS, SandboxResult, SandboxUnavailable, run_python

__all__ = ["LIMITS", "SandboxResult", "SandboxUnavailable", "calculator", "run_python"]
