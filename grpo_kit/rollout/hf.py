"""The ``hf`` sampler: transformers ``generate`` on the policy model itself.

It shares the trainer's model (sharded or not), so :meth:`HFSampler.sync_weights` has nothing to
copy. Each prompt's completions are drawn with its own seed (:func:`~grpo_kit.rollout.base.prompt_seed`),
so they do not change with the batch or the rank that samples them. Log-probs of
the sampled tokens come from the distribution actually sampled from (temperature, top-k, top-p
applied), recorded step by step by a logits processor that keeps one ``[N, V]`` row of
log-probabilities at a time rather than the ``[T, N, V]`` scores ``output_scores`` would hold.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

from grpo_kit.dist import gathered, many_ranks
from grpo_kit.records import RolloutBatch
from grpo_kit.rollout.base import Sampled, SamplingConfig, prompt_keys, prompt_seed, to_rollout_batch


class _RecordLogprobs(LogitsProcessor):
    """Records log p(token) of each sampled token under the final (warped) distribution.

    At step t+1 the processor sees the token sampled at step t as ``input_ids[:, -1]``, and gathers
    its log-prob from the step-t log-softmax it kept; the last step is gathered by :meth:`finish`.
    """

    def __init__(self):
        self.prev: torch.Tensor | None = None  # [N, V] log-probs of the previous step
        self.taken: list[torch.Tensor] = []  # T x [N]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:
            self.taken.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))  # [N]
        self.prev = torch.log_softmax(scores.float(), dim=-1)  # [N, V]
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:
            self.taken.append(self.prev.gather(1, last_tokens[:, None]).squeeze(1))
            self.prev = None
        return torch.stack(self.taken, dim=1) if self.taken else last_tokens.new_zeros((len(last_tokens), 0))


class _PromptNoise(LogitsProcessor):
    """Gumbel noise on the (warped) scores, drawn from one generator per prompt: the argmax of
    ``scores + Gumbel`` is a sample of ``softmax(scores)`` (the Gumbel-max trick), and each prompt's
    G completions depend on its own seed only, not on the prompts batched with it or their number.
    Tokens masked to -inf by top-k/top-p stay impossible."""

    def __init__(self, seeds: list[int], G: int, device: torch.device):
        self.G = G
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        V = scores.shape[-1]
        u = torch.cat([torch.rand((self.G, V), generator=g, device=scores.device) for g in self.gens])  # [B*G, V]
        return scores.float() - torch.log(-torch.log(u.clamp(min=1e-20)))


class HFSampler:
    """Samples with ``model.generate``; see :class:`~grpo_kit.rollout.base.Sampler`."""

    def __init__(self, model, tokenizer, cfg: SamplingConfig, *, logprobs: bool = True):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.logprobs = logprobs  # record the sampled tokens' log-probs (for truncated IS)
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: set tokenizer.pad_token (e.g. to eos)")
        self.eos_ids = _eos_ids(model, tokenizer)

    def sync_weights(self, model) -> None:
        self.model = model  # the same module the trainer updates: nothing to copy

    def _generation_config(self) -> GenerationConfig:
        c = self.cfg
        # greedy over scores plus per-prompt Gumbel noise (see _PromptNoise): a sample of the warped
        # distribution; the warpers run in our own processor list (see sample)
        return GenerationConfig(do_sample=False, max_new_tokens=c.max_new_tokens, num_return_sequences=1,
                                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_ids,
                                stop_strings=c.stop or None, return_dict_in_generate=True, use_cache=True,
                                temperature=None, top_k=None, top_p=None)

    @torch.no_grad()
    def sample(self, prompt_ids: list[list[int]], seed: int, keys: Sequence[int] | None = None) -> RolloutBatch:
        c, dev = self.cfg, self.model.device
        G, width = c.n, max(len(p) for p in prompt_ids)
        pad = self.tokenizer.pad_token_id
        rows = [p for p in prompt_ids for _ in range(G)]  # G rows per prompt, prompt order
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in rows], device=dev)  # [B*G, P]
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows], device=dev)
        recorder = _RecordLogprobs() if self.logprobs else None
        procs = [TemperatureLogitsWarper(c.temperature)] if c.temperature != 1.0 else []
        if c.top_k:
            procs.append(TopKLogitsWarper(c.top_k))
        if c.top_p < 1.0:
            procs.append(TopPLogitsWarper(c.top_p))
        noise = _PromptNoise([prompt_seed(seed, k) for k in prompt_keys(len(prompt_ids), keys)], G, dev)
        was_training = self.model.training
        self.model.eval()
        with gathered(self.model):  # sharded: the layers all-gathered once, not at every token
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=self._generation_config(),
                                      logits_processor=LogitsProcessorList([*procs, *([recorder] if recorder else []),
                                                                            noise]),
                                      tokenizer=self.tokenizer if c.stop else None, synced_gpus=many_ranks())
        self.model.train(was_training)
        new = out.sequences[:, width:]  # [B*G, T]
        logp = recorder.finish(new[:, -1]) if recorder is not None and new.shape[1] else None  # [B*G, T]
        return to_rollout_batch(prompt_ids, self._split(new.tolist(), logp.tolist() if logp is not None else None,
                                                        len(prompt_ids)))

    def _split(self, seqs: list[list[int]], logps, n_prompts: int) -> list[Sampled]:
        G = self.cfg.n
        ids, reasons, lps = [], [], []
        for k, seq in enumerate(seqs):
            cut, reason = _cut(seq, self.eos_ids, self.tokenizer.pad_token_id, self.cfg.max_new_tokens)
            ids.append(seq[:cut])
            reasons.append(reason)
            lps.append(logps[k][:cut] if logps is not None else None)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        reasons = ["stop" if r == "length" and any(s in t for s in self.cfg.stop) else r
                   for r, t in zip(reasons, texts)]
        return [Sampled(ids[i * G:(i + 1) * G], texts[i * G:(i + 1) * G], reasons[i * G:(i + 1) * G],
                        lps[i * G:(i + 1) * G] if logps is not None else None) for i in range(n_prompts)]


def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("neither the model nor the tokenizer defines an eos token")
    return ids


def _cut(seq: list[int], eos_ids: list[int], pad_id: int, max_new: int) -> tuple[int, str]:
    """Length of the completion (eos included) and why it ended."""
    for t, tok in enumerate(seq):
        if tok in eos_ids:
            return t + 1, "stop"
    n = len(seq)
    while n and seq[n - 1] == pad_id and pad_id not in eos_ids:
        n -= 1  # a stop string ended it early; generate padded the rest
    return n, ("length" if n >= max_new else "stop")
