"""The reward registry: names -> reward functions, and the reward contract.

A reward function is TRL-compatible::

    def my_reward(completions: list[str], **columns) -> list[float | None]: ...

``completions`` are completion texts (a chat completion, a list of messages, is turned into its
assistant text by :func:`completion_text` before the call); ``columns`` are the other dataset
columns, one entry per completion. ``None`` means "does not apply": it is excluded from means,
never turned into 0.

Every reward declares a *scope*, read by the scorer:

- ``"item"`` (the default): the function is elementwise. The scorer calls it on one completion at a
  time, in a worker process, under a hard per-item timeout.
- ``"group"``: the score of a completion depends on the other completions of the same prompt (the
  Kimi k1.5 length penalty). Called once per group, in a worker, under timeout x group size.
- ``"batch"``: a learned model scoring many completions at once. Called in the main process on the
  whole batch (no hard timeout: the model is trusted code, its input is truncated).

Keyword-only parameters with defaults (``pattern=...``, ``max_length=...``) are the reward's
settings: the config binds them (``args:``), the data never does.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Literal

from grpo_kit.config import ConfigError

Scope = Literal["item", "group", "batch"]
RewardFn = Callable[..., list]

REWARDS: dict[str, RewardFn] = {}


def reward(name: str | None = None, *, scope: Scope = "item") -> Callable[[RewardFn], RewardFn]:
    """Register a built-in reward under ``name`` (default: the function's name) with its scope."""

    def deco(fn: RewardFn) -> RewardFn:
        key = name or fn.__name__
        if key in REWARDS and REWARDS[key] is not fn:
            raise ValueError(f"reward {key!r} is registered twice")
        fn.reward_scope = scope  # type: ignore[attr-defined]
        REWARDS[key] = fn
        return fn

    return deco


def reward_scope(fn: Callable) -> Scope:
    """The scope a function declared with :func:`reward`, ``"item"`` for a plain user function."""
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(inner, "reward_scope", "item")


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is; a chat completion (a list of messages, or one
    message dict) as the concatenated content of its assistant messages.

    >>> completion_text("<think>hi</think>")
    '<think>hi</think>'
    >>> completion_text([{"role": "assistant", "content": "42"}])
    '42'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts = []
        for msg in completion:
            if not isinstance(msg, dict) or "content" not in msg:
                raise TypeError(
                    "a chat completion must be a list of {'role': ..., 'content': ...} messages, "
                    f"got an element {type(msg).__name__}"
                )
            if msg.get("role", "assistant") == "assistant":
                content = msg["content"]
                if isinstance(content, list):  # multimodal-style [{"type": "text", "text": ...}]
                    content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
                parts.append("" if content is None else str(content))
        return "".join(parts)
    if completion is None:
        raise TypeError("completion is null")
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def _builtins() -> dict[str, RewardFn]:
    import rewards  # noqa: F401  (importing the package registers the built-ins)

    return REWARDS


def known_rewards() -> list[str]:
    return sorted(_builtins())


def get_reward(spec: str) -> RewardFn:
    """Resolve a reward by registry name, ``path/to/file.py:function`` or ``package.module:function``.

    >>> get_reward("no_such_reward")
    Traceback (most recent call last):
    ...
    grpo_kit.config.ConfigError: unknown reward 'no_such_reward'; known rewards: ...
    """
    if ":" in spec:
        return _load_user_reward(spec)
    table = _builtins()
    if spec not in table:
        raise ConfigError(
            f"unknown reward {spec!r}; known rewards: {', '.join(sorted(table))} "
            "(or give a user reward as path/to/file.py:function or package.module:function)"
        )
    return table[spec]


def _load_user_reward(spec: str) -> RewardFn:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"reward {spec!r}: expected path/to/file.py:function or package.module:function")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"reward {spec!r}: file {path} does not exist")
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
                raise ConfigError(f"reward {spec!r}: loading {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"reward {spec!r}: cannot import module {target!r}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ConfigError(f"reward {spec!r}: {target} has no function {attr!r}")
    return fn


def reward_settings(fn: Callable) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of a reward (its settings), by name."""
    inner = getattr(fn, "func", fn)
    try:
        params = inspect.signature(inner).parameters
    except (TypeError, ValueError):
        return {}
    return {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
