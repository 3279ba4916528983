"""The reward contract: what a reward function is, how it is declared, bound and called.

This module is the bottom layer: the built-in rewards (``rewards/``) import it, and so do the
scorer and its workers; it imports nothing of theirs. Looking rewards up by name, which needs the
built-ins imported, is one layer up, in :mod:`grpo_kit.registry`.

A reward function is TRL-compatible::

    def my_reward(completions: list, **columns) -> list[float | None]: ...

``completions`` arrive as they are in the data: strings, or chat completions (lists of message
dicts), unchanged; a reward that wants the text calls :func:`completion_text` (the built-ins do).
``columns`` are the other dataset columns, one entry per completion, plus ``prompts`` (TRL's name
for ``prompt``) and, in training, ``completion_ids``. A function without ``**kwargs`` gets only
the columns it names. ``None`` means "does not apply": it is excluded from means and from the
weighted sum, never turned into 0. A *failure* (an exception, a timeout, a wrong number of values,
a NaN) is something else: it is recorded with its reason, and ``scoring.on_error`` says what it does
to the combined reward. ``async def`` rewards are awaited.

Every reward has a *scope*, read by the scorer:

- ``"item"`` (the default, and what a plain function gets): elementwise. Called on one completion
  at a time, in a worker process, under a hard per-item timeout.
- ``"group"``: a completion's score depends on the others of its prompt (the Kimi k1.5 length
  penalty). Called once per prompt group, in a worker, under timeout x group size.
- ``"batch"``: called once on the whole batch, in the main process (a learned model; a TRL reward
  that normalises over its batch). No hard timeout: use it for trusted code.

Keyword-only parameters with defaults (``pattern=...``, ``max_length=...``) are a reward's
*settings*: the config binds them (``args:``), the data never does.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

from grpo_kit.config import Scope
from grpo_kit.errors import ConfigError

RewardFn = Callable[..., list]

REWARDS: dict[str, RewardFn] = {}
"""Built-in rewards by name, filled by :func:`reward` as ``rewards/`` is imported."""

SCOPES: tuple[Scope, ...] = ("item", "group", "batch")


def reward(name: str | None = None, *, scope: Scope = "item") -> Callable[[RewardFn], RewardFn]:
    """Register a built-in reward under ``name`` (default: the function's name) with its scope."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")

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


def reward_settings(fn: Callable) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of a reward (its settings), by name."""
    inner = getattr(fn, "func", fn)
    try:
        params = inspect.signature(inner).parameters
    except (TypeError, ValueError):
        return {}
    return {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def accepted_columns(fn: Callable) -> frozenset[str] | None:
    """Names of data columns a function takes; None when it takes ``**kwargs`` (all of them)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset(n for n, p in params.items()
                     if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))


@dataclass(frozen=True)
class BoundReward:
    """A reward function with its settings bound: call it as ``(completions, **columns)``.

    ``columns`` is the set of data columns it takes (None: all, it has ``**kwargs``), so callers send
    it only those; ``scope`` is the declared scope unless the config overrides it.

    >>> def brevity(completions, *, limit=10): return [float(len(c) <= limit) for c in completions]
    >>> b = bind(brevity, {"limit": 3}, "brevity")
    >>> b(["abc", "abcd"], answer=["x", "y"]), b.scope, sorted(b.columns)
    ([1.0, 0.0], 'item', ['completions'])
    """

    spec: str
    fn: RewardFn
    args: tuple[tuple[str, Any], ...]
    scope: Scope
    columns: frozenset[str] | None

    def select(self, columns: dict[str, Any]) -> dict[str, Any]:
        """The entries of ``columns`` this reward takes."""
        if self.columns is None:
            return dict(columns)
        return {k: v for k, v in columns.items() if k in self.columns}

    def __call__(self, completions: list, **columns: Any) -> Any:
        """The function's raw result (a coroutine for an ``async def`` reward: :func:`call_reward`
        awaits it and checks the values)."""
        return self.fn(completions, **dict(self.args), **self.select(columns))


async def _await(awaitable):
    return await awaitable


def bind(fn: RewardFn, args: dict[str, Any], spec: str, scope: Scope | None = None) -> BoundReward:
    """Bind ``fn``'s settings from ``args`` (a misspelt setting is an error listing the real ones)."""
    settings = reward_settings(fn)
    for k in args:
        if k not in settings:
            known = ", ".join(settings) or "none"
            raise ConfigError(f"reward {spec!r} has no setting {k!r}; its settings: {known}")
    cols = accepted_columns(fn)
    if cols is not None:
        cols = cols - set(args)
    return BoundReward(spec, fn, tuple(sorted(args.items())), scope or reward_scope(fn), cols)


class RewardOutputError(ValueError):
    """A reward returned something other than one finite float or None per completion."""


def call_reward(fn: Callable, completions: list, columns: dict[str, list]) -> list[float | None]:
    """Call a reward and check its result: a list of finite floats or None, one per completion.
    Raises :class:`RewardOutputError` with the reason otherwise."""
    out = fn(completions, **columns)
    if inspect.isawaitable(out):  # an `async def` reward (TRL allows them)
        out = asyncio.run(_await(out))
    return check_output(out, len(completions))


def check_output(out: Any, n: int) -> list[float | None]:
    """``out`` as a list of ``n`` floats or None; :class:`RewardOutputError` if it is not one.

    >>> check_output([1, None, 0.5], 3)
    [1.0, None, 0.5]
    >>> check_output([float("nan")], 1)
    Traceback (most recent call last):
    ...
    grpo_kit.contract.RewardOutputError: returned nan (use None for 'not applicable')
    """
    if not isinstance(out, (list, tuple)):
        raise RewardOutputError(f"returned {type(out).__name__}, expected a list of {n} floats or None")
    if len(out) != n:
        raise RewardOutputError(f"returned {len(out)} values for {n} completions")
    values: list[float | None] = []
    for v in out:
        if v is None:
            values.append(None)
            continue
        if isinstance(v, (bool, str, bytes)) or not hasattr(v, "__float__"):
            raise RewardOutputError(f"returned a {type(v).__name__}, expected float or None")
        try:  # int, float, numpy and torch scalars
            v = float(v)
        except (TypeError, ValueError) as e:
            raise RewardOutputError(f"returned {v!r}, not convertible to float: {e}") from None
        if not math.isfinite(v):
            raise RewardOutputError(f"returned {v} (use None for 'not applicable')")
        values.append(v)
    return values
