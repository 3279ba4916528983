"""Length rewards: a hard limit, DAPO's soft overlong punishment, the cosine length scaling of
Yeo et al., and the Kimi k1.5 group length penalty.

**Length unit.** Every reward here takes a ``unit`` setting:

- ``"auto"`` (default): tokens when the ``completion_ids`` column is given (the grpo-kit
  trainer and TRL pass it; offline scoring of a file usually does not), else characters;
- ``"tokens"``: ``len(completion_ids[i])``; the column is required, its absence is an error;
- ``"chars"``: ``len(text)``; ``"words"``: ``len(text.split())``. Both ignore ``completion_ids``.

One call measures every completion in the same unit. ``max_length`` is in that unit, so a config
that is also used to score files without token ids should name its unit explicitly.

**Correctness** (``cosine_length``, ``kimi_length_penalty``): a ``correct`` column (bools, or
``None`` for unknown) wins when given; otherwise the ``answer`` column is checked with
``rewards.math.math_accuracy`` (correct = full score). A completion whose correctness is unknown
scores ``None``.
"""

from __future__ import annotations

import math
from typing import Literal

from grpo_kit.contract import completion_text, reward

Unit = Literal["auto", "tokens", "chars", "words"]
_UNITS = ("auto", "tokens", "chars", "words")


def completion_lengths(name: str, completions: list, completion_ids: list | None, unit: str) -> list[int]:
    """Lengths of ``completions`` in ``unit`` (see the module docstring); ``name`` is the reward's,
    for error messages.

    >>> completion_lengths("demo", ["a bc", "d"], None, "auto")
    [4, 1]
    >>> completion_lengths("demo", ["a bc", "d"], [[1, 2], [3]], "words")
    [2, 1]
    """
    if unit not in _UNITS:
        raise ValueError(f"{name}: unknown unit {unit!r}; valid units: {', '.join(_UNITS)}")
    if unit == "auto":
        unit = "tokens" if completion_ids is not None else "chars"
    if unit == "tokens":
        if completion_ids is None:
            raise ValueError(
                f"{name}: unit='tokens' needs the 'completion_ids' column (token ids per completion); "
                "pass it, or set unit to 'chars' or 'words'"
            )
        if len(completion_ids) != len(completions) or any(ids is None for ids in completion_ids):
            raise ValueError(f"{name}: the 'completion_ids' column must hold one id list per completion")
        return [len(ids) for ids in completion_ids]
    texts = [completion_text(c) for c in completions]
    return [len(t) for t in texts] if unit == "chars" else [len(t.split()) for t in texts]


def _require_length(name: str, setting: str, value) -> int:
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: the setting {setting!r} must be a positive integer, got {value!r}")
    return value


@reward("length_limit")
def length_limit(
    completions: list,
    completion_ids: list | None = None,
    *,
    max_length: int | None = None,
    penalty: float = 0.0,
    unit: Unit = "auto",
    **_,
) -> list[float]:
    """Hard length limit: 1.0 when ``L <= max_length``, ``penalty`` (default 0.0) beyond it.

    ``max_length`` is required. Use ``penalty=-1.0`` to punish rather than merely not reward.

    >>> length_limit(["short", "much too long"], max_length=5)
    [1.0, 0.0]
    >>> length_limit(["a b c", "a b c d"], max_length=3, penalty=-1.0, unit="words")
    [1.0, -1.0]
    """
    limit = _require_length("length_limit", "max_length", max_length)
    lengths = completion_lengths("length_limit", completions, completion_ids, unit)
    return [1.0 if n <= limit else float(penalty) for n in lengths]


@reward("overlong_punishment")
def overlong_punishment(
    completions: list,
    completion_ids: list | None = None,
    *,
    max_length: int | None = None,
    cache_length: int | None = None,
    unit: Unit = "auto",
    **_,
) -> list[float]:
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, eq. 13).

    With L_max = ``max_length`` and L_cache = ``cache_length`` (both required,
    0 < L_cache <= L_max)::

        R(L) = 0                              if L <= L_max - L_cache
             = ((L_max - L_cache) - L) / L_cache  if L_max - L_cache < L <= L_max
             = -1                             if L > L_max

    It is added to the task reward. DAPO used L_max = 20480 and L_cache = 4096 tokens.

    >>> overlong_punishment(["x" * 6, "x" * 8, "x" * 10, "x" * 11], max_length=10, cache_length=4)
    [0.0, -0.5, -1.0, -1.0]
    """
    l_max = _require_length("overlong_punishment", "max_length", max_length)
    l_cache = _require_length("overlong_punishment", "cache_length", cache_length)
    if l_cache > l_max:
        raise ValueError(
            f"overlong_punishment: cache_length={l_cache} exceeds max_length={l_max}; "
            "the soft interval (max_length - cache_length, max_length] must start at or above 0"
        )
    scores = []
    for n in completion_lengths("overlong_punishment", completions, completion_ids, unit):
        if n <= l_max - l_cache:
            scores.append(0.0)
        elif n <= l_max:
            scores.append((l_max - l_cache - n) / l_cache)
        else:
            scores.append(-1.0)
    return scores


def correctness(name: str, completions: list, answer: list | None, correct: list | None) -> list[bool | None]:
    """Per completion: is it correct? From the ``correct`` column when given, else from
    ``rewards.math.math_accuracy`` on the ``answer`` column (``None``: unknown).

    >>> correctness("demo", ["a", "b", "c"], None, [True, 0, None])
    [True, False, None]
    """
    if correct is not None:
        if len(correct) != len(completions):
            raise ValueError(f"{name}: the 'correct' column has {len(correct)} values for {len(completions)} completions")
        out: list[bool | None] = []
        for value in correct:
            if hasattr(value, "item"):  # numpy / torch scalars
                value = value.item()
            if value is not None and not isinstance(value, (bool, int, float)):
                raise ValueError(f"{name}: the 'correct' column must hold booleans or None, got {value!r}")
            out.append(None if value is None else bool(value))
        return out
    if answer is None:
        raise ValueError(
            f"{name}: needs the 'answer' column (gold answers, checked with rewards.math.math_accuracy) "
            "or a 'correct' column (booleans)"
        )
    from rewards.math import math_accuracy  # lazy: the math checker is only needed here

    scores = math_accuracy(completions, answer)
    return [None if s is None else s >= 1.0 for s in scores]


@reward("cosine_length")
def cosine_length(
    completions: list,
    answer: list | None = None,
    completion_ids: list | None = None,
    correct: list | None = None,
    *,
    max_length: int | None = None,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    exceed_penalty: float | None = None,
    unit: Unit = "auto",
    **_,
) -> list[float | None]:
    """Cosine length scaling (Yeo et al. 2025, arXiv 2502.03373; open-r1's ``cosine_scaled_reward``).

    With progress p = min(L, L_max) / L_max and c = cos(pi * p)::

        correct: r = min_value_correct + (max_value_correct - min_value_correct) * (1 + c) / 2
        wrong:   r = max_value_wrong   + (min_value_wrong   - max_value_wrong)   * (1 + c) / 2

    so a short correct answer earns ``max_value_correct`` and a long one ``min_value_correct``; a
    short wrong answer earns ``min_value_wrong`` (the harshest) and a long one ``max_value_wrong``.
    Lengths past ``max_length`` (required) are clamped to it, unless ``exceed_penalty`` is set: then
    a completion longer than ``max_length`` scores ``exceed_penalty`` (the paper's r_exceed).
    Correctness: see the module docstring.

    >>> cosine_length(["x" * 0, "x" * 10, "x" * 0, "x" * 20], correct=[True, True, False, False], max_length=10)
    [1.0, 0.5, -1.0, -0.5]
    """
    l_max = _require_length("cosine_length", "max_length", max_length)
    if min_value_correct > max_value_correct:
        raise ValueError(
            f"cosine_length: min_value_correct={min_value_correct} exceeds max_value_correct={max_value_correct}"
        )
    if min_value_wrong > max_value_wrong:
        raise ValueError(f"cosine_length: min_value_wrong={min_value_wrong} exceeds max_value_wrong={max_value_wrong}")
    lengths = completion_lengths("cosine_length", completions, completion_ids, unit)
    is_correct = correctness("cosine_length", completions, answer, correct)
    scores: list[float | None] = []
    for n, ok in zip(lengths, is_correct):
        if ok is None:
            scores.append(None)
        elif exceed_penalty is not None and n > l_max:
            scores.append(float(exceed_penalty))
        else:
            half = (1.0 + math.cos(math.pi * min(n, l_max) / l_max)) / 2
            if ok:
                scores.append(min_value_correct + (max_value_correct - min_value_correct) * half)
            else:
                scores.append(max_value_wrong + (min_value_wrong - max_value_wrong) * half)
    return scores


def _group_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else repr(prompt)


@reward("kimi_length_penalty", scope="group")
def kimi_length_penalty(
    completions: list,
    answer: list | None = None,
    completion_ids: list | None = None,
    correct: list | None = None,
    prompt: list | None = None,
    prompts: list | None = None,
    *,
    unit: Unit = "auto",
    **_,
) -> list[float | None]:
    """Kimi k1.5 length penalty (Kimi Team 2025, arXiv 2501.12599, section 2.3.3).

    Within each group of completions of one prompt, with min_len / max_len the shortest and longest
    lengths in the group::

        lambda = 0.5 - (len - min_len) / (max_len - min_len)
        r = lambda            if correct
        r = min(0, lambda)    if wrong

    and r = 0 for every completion when all lengths in the group are equal. Scope ``"group"``: the
    scorer calls it on one prompt's completions. When a ``prompt`` (or TRL's ``prompts``) column
    is given, the call is further split by prompt, so a whole TRL batch is also scored per group
    (identical prompts count as one group). Without it, the whole call is one group. Completions
    of unknown correctness score ``None`` but still count towards min_len / max_len.

    >>> kimi_length_penalty(["x" * 10, "x" * 20, "x" * 30, "x" * 30], correct=[True, True, True, False])
    [0.5, 0.0, -0.5, -0.5]
    """
    lengths = completion_lengths("kimi_length_penalty", completions, completion_ids, unit)
    is_correct = correctness("kimi_length_penalty", completions, answer, correct)
    prompt_column = prompt if prompt is not None else prompts
    if prompt_column is not None and len(prompt_column) != len(completions):
        raise ValueError(f"kimi_length_penalty: {len(prompt_column)} prompts for {len(completions)} completions")
    groups: dict[str, list[int]] = {}
    for i in range(len(completions)):
        key = "" if prompt_column is None else _group_key(prompt_column[i])
        groups.setdefault(key, []).append(i)
    scores: list[float | None] = [None] * len(completions)
    for members in groups.values():
        lo = min(lengths[i] for i in members)
        hi = max(lengths[i] for i in members)
        for i in members:
            if is_correct[i] is None:
                continue
            lam = 0.0 if hi == lo else 0.5 - (lengths[i] - lo) / (hi - lo)
            scores[i] = lam if is_correct[i] else min(0.0, lam)
    return scores
