"""Reward functions written the way TRL and open-r1 users write them, used unchanged by
tests/test_user_rewards.py through `grpo-kit score --reward FILE:fn` and `grpo-kit train`.

TRL's contract: ``f(completions, **kwargs) -> list[float | None]`` over a batch; with chat prompts
a completion is ``[{"role": "assistant", "content": text}]``; dataset columns arrive by name.
"""

import asyncio
import re

from math_verify import parse, verify


def format_reward(completions, **kwargs):
    """Chat completions read as completion[0]["content"]: 1 for digits only."""
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if re.fullmatch(r"\d+", c) else 0.0 for c in contents]


def accuracy_reward(completions, solution, **kwargs):
    """A `solution` column, checked with math_verify; None where the gold does not parse."""
    rewards = []
    for completion, sol in zip(completions, solution):
        gold = parse(sol)
        if not gold:
            rewards.append(None)
            continue
        rewards.append(float(verify(gold, parse(completion[0]["content"]))))
    return rewards


def get_length_cap_reward(max_chars: int, penalty: float):
    """A factory returning a closure, as open-r1's get_repetition_penalty_reward does."""
    def length_cap_reward(completions, **kwargs):
        return [penalty if len(c[0]["content"]) > max_chars else 0.0 for c in completions]
    return length_cap_reward


length_cap = get_length_cap_reward(max_chars=1, penalty=-0.5)


def token_count_reward(completions, completion_ids, **kwargs):
    """`completion_ids` required: the number of tokens, scaled."""
    return [0.1 * len(ids) for ids in completion_ids]


async def async_digit_reward(completions, **kwargs):
    """An `async def` reward (TRL awaits them)."""
    await asyncio.sleep(0)
    return [float(any(ch.isdigit() for ch in c[0]["content"])) for c in completions]


def len_reward(completions, solution, **kwargs):
    """open-r1's Kimi-style length reward: compares the lengths within the batch it is given."""
    contents = [c[0]["content"] for c in completions]
    correct = [bool(verify(parse(s), parse(c))) for c, s in zip(contents, solution)]
    lengths = [len(c) for c in contents]
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(completions)
    out = []
    for n, ok in zip(lengths, correct):
        lam = 0.5 - (n - lo) / (hi - lo)
        out.append(float(lam if ok else min(0.0, lam)))
    return out
