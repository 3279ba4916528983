"""The sampler protocol and its settings. A sampler returns the rollout record
(:class:`~grpo_kit.records.RolloutBatch`) with the completions filled in; the caller attributes
them to the dataset's prompts (:meth:`~grpo_kit.records.RolloutBatch.with_prompts`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence

from pydantic import Field, model_validator

from grpo_kit.config import Strict
from grpo_kit.records import RolloutBatch


class SamplingConfig(Strict):
    """How completions are sampled (the same for every sampler)."""

    n: int = Field(8, ge=1, description="G: completions per prompt")
    temperature: float = Field(1.0, gt=0, description="sampling temperature; the trainer applies "
                               "the same one to its log-probs")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (1 = off)")
    top_k: int = Field(0, ge=0, description="top-k sampling (0 = off)")
    max_new_tokens: int = Field(256, ge=1, description="completion length limit; a completion that "
                                "reaches it is finished with reason 'length' (truncated)")
    stop: list[str] = Field(default_factory=list, description="stop strings (kept in the text)")
    seed: int | None = Field(None, description="sampler seed (default: derived from train.seed)")

    @model_validator(mode="after")
    def _check(self):
        if any(not s for s in self.stop):
            raise ValueError("sampling.stop: an empty stop string would stop at once; remove it")
        return self


@dataclass
class Sampled:
    """The completions of one prompt, as a sampler produces them (see :func:`to_rollout_batch`)."""

    completion_ids: list[list[int]]  # [G][T_i]
    texts: list[str]  # [G]
    finish_reasons: list[str]  # [G] "stop" | "length"
    logprobs: list[list[float]] | None  # [G][T_i] the sampler's log-probs of its tokens
    masks: list[list[int]] | None = None  # [G][T_i] multi-turn: 1 sampled, 0 inserted by a tool
    turns: list[list[dict]] | None = None  # [G] multi-turn: each completion's turns


@dataclass
class TurnOut:
    """One turn of one row, as :meth:`generate_turns` returns it: the tokens sampled, their
    log-probs (None without), why it ended (``"eos"``, ``"stop"``: a stop string, ``"length"``: its
    token limit) and, where the engine says, how many context tokens came from its prefix cache."""

    ids: list[int]
    logprobs: list[float] | None
    reason: str
    cached_tokens: int | None = None


def to_rollout_batch(prompt_ids: list[list[int]], sampled: list[Sampled]) -> RolloutBatch:
    """The record of ``sampled[b]``, the completions of ``prompt_ids[b]`` (prompts unattributed)."""
    has_lp = all(s.logprobs is not None for s in sampled)
    multi = bool(sampled) and all(s.turns is not None for s in sampled)
    return RolloutBatch.from_groups(
        prompts=[None] * len(prompt_ids), prompt_ids=prompt_ids, completions=[s.texts for s in sampled],
        completion_ids=[s.completion_ids for s in sampled], finish_reasons=[s.finish_reasons for s in sampled],
        sampler_logprobs=[s.logprobs for s in sampled] if has_lp else None,
        completion_masks=[s.masks for s in sampled] if multi else None,
        turns=[s.turns for s in sampled] if multi else None)


def prompt_seed(seed: int, key: int) -> int:
    """The 31-bit seed of the prompt with ``key`` in a batch sampled with ``seed``. Samplers seed
    each prompt's completions with it, so they depend on the prompt's key (its place in the step's
    global batch), not on the other prompts beside it nor on the rank that samples it.

    >>> prompt_seed(3, 0) == prompt_seed(3, 0) != prompt_seed(3, 1)
    True
    """
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") >> 1


def prompt_keys(n: int, keys: Sequence[int] | None) -> list[int]:
    """``keys`` checked against ``n`` prompts, or ``0 .. n-1``."""
    if keys is None:
        return list(range(n))
    if len(keys) != n:
        raise ValueError(f"{len(keys)} prompt keys for {n} prompts")
    return list(keys)


class Sampler(Protocol):
    """Samples G completions for each prompt; sees new weights through :meth:`sync_weights`."""

    def sample(self, prompt_ids: list[list[int]], seed: int, keys: Sequence[int] | None = None) -> RolloutBatch:
        """The completions, ``cfg.n`` per prompt, grouped in prompt order (see :func:`to_rollout_batch`).
        Prompt ``i`` is sampled with :func:`prompt_seed` ``(seed, keys[i])`` (keys default to
        ``0 .. B-1``): the same key and seed give the same completions in any batch, on any rank."""
        ...

    def sync_weights(self, model) -> None:
        """Make the sampler use ``model``'s current weights (after an optimizer step)."""
        ...


class TurnSampler(Sampler, Protocol):
    """A sampler that can also continue given contexts one turn at a time (multi-turn rollouts,
    :mod:`grpo_kit.rollout.multiturn`)."""

    lockstep: bool
    """Every rank must call :meth:`generate_turns` as often as the others (a sharded hf model)."""

    def generate_turns(self, contexts: list[list[int]], seeds: list[int], max_new: list[int],
                       stop: list[str]) -> list[TurnOut]:
        """One completion of each context (token ids), row i drawn with ``seeds[i]``, at most
        ``max_new[i]`` tokens, ending at eos or at the first of the ``stop`` strings (kept)."""
        ...
