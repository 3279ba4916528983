"""Samplers: given prompt token ids, return :class:`~grpo_kit.records.Group` s of G completions.

Every sampler implements :class:`Sampler`; the trainer knows nothing else about it. ``hf`` uses
transformers' ``generate`` on the policy model itself (CPU tests, the demo, small GPU runs).
"""

from grpo_kit.rollout.base import Sampler, SamplingConfig, Sampled

__all__ = ["Sampler", "SamplingConfig", "Sampled", "make_sampler"]


def make_sampler(name: str, model, tokenizer, cfg: SamplingConfig, *, logprobs: bool = True) -> Sampler:
    """The sampler called ``name`` for ``model``; ``logprobs``: return the sampled tokens' log-probs."""
    from grpo_kit.config import ConfigError

    if name == "hf":
        from grpo_kit.rollout.hf import HFSampler

        return HFSampler(model, tokenizer, cfg, logprobs=logprobs)
    raise ConfigError(f"unknown sampler {name!r}; known samplers: hf")
