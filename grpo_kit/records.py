"""The plain records passed between the stages of the loop: sample -> score -> advantages -> update."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Group:
    """One prompt with its G sampled completions.

    The sampler fills the prompt and completion fields; the scorer fills ``rewards`` (per reward
    function), ``reward`` (the weighted sum) and ``reward_errors``. Advantages are never stored
    here under the name rewards: the trainer computes them from ``reward``.
    """

    prompt: Any  # the dataset's prompt: a string, or a list of chat messages
    prompt_ids: list[int]
    completions: list[str]  # [G] decoded texts
    completion_ids: list[list[int]]  # [G][T_i], the sampled tokens, eos included when sampled
    finish_reasons: list[str]  # [G] "stop" (eos or a stop string) | "length" (max_new_tokens)
    sampler_logprobs: list[list[float]] | None = None  # [G][T_i] log-probs of the sampled tokens
    columns: dict[str, Any] = field(default_factory=dict)  # the row's other columns (answer, ...)
    rewards: dict[str, list[float | None]] = field(default_factory=dict)
    reward: list[float | None] = field(default_factory=list)
    reward_errors: dict[str, list[str | None]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.completions)

    @property
    def truncated(self) -> list[bool]:
        return [r == "length" for r in self.finish_reasons]
