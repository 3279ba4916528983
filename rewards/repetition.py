"""N-gram repetition penalty (Yeo et al. 2025, arXiv 2502.03373, appendix C.2; open-r1's
``repetition_penalty_reward``)."""

from __future__ import annotations

from typing import Literal

from grpo_kit.contract import completion_text, reward


def _penalty(seq: list, ngram_size: int, max_penalty: float) -> float:
    total = len(seq) - ngram_size + 1
    if total <= 0:
        return 0.0
    unique = len(set(zip(*(seq[i:] for i in range(ngram_size)))))
    if unique == total:
        return 0.0  # not (1 - 1) * max_penalty, which is -0.0
    return (1.0 - unique / total) * max_penalty


@reward("repetition_penalty")
def repetition_penalty(
    completions: list,
    completion_ids: list | None = None,
    *,
    ngram_size: int = 3,
    max_penalty: float = -1.0,
    on: Literal["words", "tokens"] = "words",
    **_,
) -> list[float]:
    """Penalise repeated n-grams: ``(1 - unique_ngrams / total_ngrams) * max_penalty``.

    ``on="words"`` splits the lower-cased text on whitespace (as open-r1 does); ``on="tokens"``
    uses the ``completion_ids`` column (required then). A completion with fewer than ``ngram_size``
    units scores 0.0. ``max_penalty`` must be <= 0; the result lies in ``[max_penalty, 0]``.
    Linear time: one pass building a set of n-gram tuples.

    >>> repetition_penalty(["the cat sat on the mat", "go go go go go go"], ngram_size=2)
    [0.0, -0.8]
    """
    if isinstance(ngram_size, bool) or not isinstance(ngram_size, int) or ngram_size < 1:
        raise ValueError(f"repetition_penalty: the setting 'ngram_size' must be a positive integer, got {ngram_size!r}")
    if max_penalty > 0:
        raise ValueError(f"repetition_penalty: the setting 'max_penalty' must be <= 0 (a penalty), got {max_penalty}")
    if on == "tokens":
        if completion_ids is None:
            raise ValueError(
                "repetition_penalty: on='tokens' needs the 'completion_ids' column (token ids per completion); "
                "pass it, or set on='words'"
            )
        if len(completion_ids) != len(completions) or any(ids is None for ids in completion_ids):
            raise ValueError("repetition_penalty: the 'completion_ids' column must hold one id list per completion")
        # plain ints: tensor elements would hash by identity
        sequences = [ids.tolist() if hasattr(ids, "tolist") else list(ids) for ids in completion_ids]
    elif on == "words":
        sequences = [completion_text(c).lower().split() for c in completions]
    else:
        raise ValueError(f"repetition_penalty: unknown setting on={on!r}; valid values: words, tokens")
    return [_penalty(seq, ngram_size, max_penalty) for seq in sequences]
