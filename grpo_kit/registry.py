"""Rewards by name: the built-ins of ``rewards/``, or a user's function from a file or module.

This layer sits above ``rewards/`` (importing it registers the built-ins in
:data:`grpo_kit.contract.REWARDS`) and below the scorer. The reward contract itself (the
``@reward`` decorator, scopes, :func:`~grpo_kit.contract.completion_text`, binding and output
checks) is :mod:`grpo_kit.contract`; its names are re-exported here for code written against
earlier versions.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import rewards  # noqa: F401  (importing the package registers the built-ins)
from grpo_kit.config import Scope
from grpo_kit.contract import (REWARDS, BoundReward, RewardFn, bind, completion_text,  # noqa: F401
                               reward, reward_scope, reward_settings)
from grpo_kit.errors import ConfigError
from grpo_kit.tools.base import ToolSpec, calculator_spec, python_spec, tool_spec

BUILTIN_TOOLS = ("calculator", "python")


def get_tool(spec: str, python: dict[str, Any] | None = None) -> tuple[ToolSpec, Any]:
    """A tool by name (``calculator``, ``python``) or as ``path/to/file.py:function`` /
    ``package.module:function`` (a function marked with :func:`grpo_kit.tools.tool`): its
    :class:`~grpo_kit.tools.base.ToolSpec` and the function (None for the built-ins, which the
    rollout runs itself). ``python``: the sandbox's settings."""
    if spec == "calculator":
        return calculator_spec(), None
    if spec == "python":
        return python_spec(python or {}), None
    if ":" not in spec:
        raise ConfigError(f"unknown tool {spec!r}; the built-in tools: {', '.join(BUILTIN_TOOLS)} (or give a "
                          "user tool as path/to/file.py:function or package.module:function, marked @tool)")
    fn = _load_user_reward(spec, what="tool")
    try:
        return tool_spec(fn, spec), fn
    except ValueError as e:
        raise ConfigError(str(e)) from None


def known_rewards() -> list[str]:
    """The names of the built-in rewards."""
    return sorted(REWARDS)


def get_reward(spec: str) -> RewardFn:
    """Resolve a reward by registry name, ``path/to/file.py:function`` or ``package.module:function``.

    >>> get_reward("no_such_reward")
    Traceback (most recent call last):
    ...
    grpo_kit.errors.ConfigError: unknown reward 'no_such_reward'; known rewards: ...
    """
    if ":" in spec:
        return _load_user_reward(spec)
    if spec not in REWARDS:
        raise ConfigError(
            f"unknown reward {spec!r}; known rewards: {', '.join(sorted(REWARDS))} "
            "(or give a user reward as path/to/file.py:function or package.module:function)"
        )
    return REWARDS[spec]


def bind_reward(spec: str, args: dict[str, Any] | None = None, scope: Scope | None = None) -> BoundReward:
    """Resolve ``spec`` and bind its settings (see :func:`grpo_kit.contract.bind`)."""
    return bind(get_reward(spec), dict(args or {}), spec, scope)


def _load_user_reward(spec: str, what: str = "reward") -> RewardFn:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"{what} {spec!r}: expected path/to/file.py:function or package.module:function")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{what} {spec!r}: file {path} does not exist")
        mod_name = f"grpo_kit_user_reward_{abs(hash(str(path)))}"
        module = sys.modules.get(mod_name)
        if module is None:
            mspec = importlib.util.spec_from_file_location(mod_name, path)
            assert mspec is not None and mspec.loader is not None
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = module
            try:
                mspec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise ConfigError(f"{what} {spec!r}: loading {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"{what} {spec!r}: cannot import module {target!r}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ConfigError(f"{what} {spec!r}: {target} has no function {attr!r}")
    return fn
