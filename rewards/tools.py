"""Rewards over multi-turn, tool-using completions: they read the ``tool_calls`` column (each
completion's calls, in order: ``tool``, ``call``, ``status``, ``output``; see
:func:`grpo_kit.records.tool_calls`) beside the transcript itself.

- ``tool_answer``: exact match of the final answer, the text after the last tool output, with
  ``require_call`` only when it came after a successful call.
- ``tool_failures``: minus the number of calls that did not succeed (error, timeout, killed, not
  run), a penalty to weight.
"""

from __future__ import annotations

from typing import Any

from grpo_kit.contract import completion_text, reward
from rewards.match import _normalise


def final_answer(completion: Any, after: str = "</output>") -> str:
    """What follows the last tool output: in a chat completion its last assistant message, in a
    text one the text after the last ``after`` (the whole text when there is none).

    >>> final_answer("<calculator>2*3</calculator><output>6</output>6")
    '6'
    >>> final_answer([{"role": "assistant", "content": "<tool_call>..</tool_call>"},
    ...               {"role": "tool", "content": "6"}, {"role": "assistant", "content": "It is 6"}])
    'It is 6'
    """
    if isinstance(completion, list):
        said = [m for m in completion if isinstance(m, dict) and m.get("role") == "assistant"]
        return completion_text(said[-1:]) if said else ""
    text = completion_text(completion)
    return text.rpartition(after)[2] if after in text else text


@reward("tool_answer")
def tool_answer(completions: list[Any], answer: list[Any], tool_calls: list[list[dict]] | None = None, *,
                require_call: bool = False, after: str = "</output>", ignore_case: bool = True,
                ignore_space: bool = True, **_) -> list[float | None]:
    """1.0 when the final answer (:func:`final_answer`) equals ``answer`` after normalising both
    (as ``exact_match``), else 0.0; None where the gold answer is missing. ``require_call``: also
    0.0 unless a call succeeded before it (needs the ``tool_calls`` column, a multi-turn record).

    >>> c = ["<calculator>2*3</calculator><output>6</output>6", "6", "<calculator>2*3</calculator><output>6</output>7"]
    >>> calls = [[{"tool": "calculator", "call": "2*3", "status": "ok", "output": "6"}], [], []]
    >>> tool_answer(c, answer=["6", "6", "6"]), tool_answer(c, answer=["6"] * 3, tool_calls=calls, require_call=True)
    ([1.0, 1.0, 0.0], [1.0, 0.0, 0.0])
    """
    if require_call and tool_calls is None:
        raise ValueError("tool_answer: require_call needs the tool_calls column (a multi-turn rollout with tools)")
    out: list[float | None] = []
    for i, (c, gold) in enumerate(zip(completions, answer, strict=True)):
        if gold is None:
            out.append(None)
            continue
        ok = _normalise(final_answer(c, after), ignore_case, ignore_space) == _normalise(str(gold), ignore_case,
                                                                                          ignore_space)
        if require_call and not any(t.get("status") == "ok" for t in tool_calls[i]):
            ok = False
        out.append(1.0 if ok else 0.0)
    return out


@reward("tool_failures")
def tool_failures(completions: list[Any], tool_calls: list[list[dict]], **_) -> list[float]:
    """Minus the number of the completion's calls whose status is not ``ok``.

    >>> tool_failures(["a", "b"], tool_calls=[[{"status": "ok"}, {"status": "timeout"}], []])
    [-1.0, 0.0]
    """
    return [0.0 - sum(t.get("status") != "ok" for t in calls) for calls in tool_calls]
