"""``exact_match``: 1.0 when the completion, lightly normalised, equals the gold answer.

For tasks whose answer is the whole completion (the ``arithmetic`` demo: ``"3+5="`` -> ``"8"``).
Both sides are stripped; by default case and all whitespace are ignored. Nothing is extracted: a
completion ``"<answer>8</answer>"`` does not match ``"8"`` (use ``math_accuracy`` for that).
"""

from __future__ import annotations

from typing import Any

from grpo_kit.contract import completion_text, reward


def _normalise(text: str, ignore_case: bool, ignore_space: bool) -> str:
    text = text.strip()
    if ignore_space:
        text = "".join(text.split())
    if ignore_case:
        text = text.casefold()
    return text


@reward("exact_match")
def exact_match(
    completions: list[Any], answer: list[Any], *, ignore_case: bool = True, ignore_space: bool = True, **_
) -> list[float | None]:
    """1.0 if the completion text equals ``answer`` after normalising both, else 0.0; ``None``
    where the gold answer is missing (``None``).

    Normalising: strip; with ``ignore_space`` remove all whitespace; with ``ignore_case`` compare
    case-insensitively (``str.casefold``).

    >>> exact_match(["8", " 1 2 ", "12", "Paris"], answer=["8", "12", "13", "paris"])
    [1.0, 1.0, 0.0, 1.0]
    >>> exact_match(["Paris", "1 2"], answer=["paris", "12"], ignore_case=False, ignore_space=False)
    [0.0, 0.0]
    >>> exact_match([[{"role": "assistant", "content": "8"}]], answer=[8])
    [1.0]
    """
    if len(completions) != len(answer):
        raise ValueError(f"exact_match: {len(completions)} completions but {len(answer)} answers")
    scores: list[float | None] = []
    for completion, gold in zip(completions, answer):
        if gold is None:
            scores.append(None)
            continue
        pred = _normalise(completion_text(completion), ignore_case, ignore_space)
        scores.append(1.0 if pred == _normalise(str(gold), ignore_case, ignore_space) else 0.0)
    return scores
