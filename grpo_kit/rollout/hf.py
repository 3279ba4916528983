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
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                          StoppingCriteriaList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from grpo_kit.dist import gathered, many_ranks
from grpo_kit.records import RolloutBatch
from grpo_kit.rollout.base import Sampled, SamplingConfig, TurnOut, prompt_keys, prompt_seed, to_rollout_batch


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


class _TurnEnd(StoppingCriteria):
    """Ends each row of a turn at eos, at a stop string or at its own token limit, and records where
    and why (``generate`` itself stops a batch, not a row, at ``max_new_tokens``). A stop string is
    looked for in the decoded last few tokens, enough to hold the longest one: a string found there
    was not wholly inside the previous step's window, so each row ends at its first occurrence."""

    def __init__(self, tokenizer, stops: list[str], eos_ids: list[int], start: int, max_new: list[int]):
        self.tokenizer, self.stops, self.eos, self.start, self.max_new = tokenizer, stops, set(eos_ids), start, max_new
        self.window = max((len(s) for s in stops), default=0) + 1  # every token is at least one character
        self.end: list[int | None] = [None] * len(max_new)
        self.reason: list[str | None] = [None] * len(max_new)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        n = input_ids.shape[1] - self.start  # tokens generated so far
        open_rows = [i for i, e in enumerate(self.end) if e is None]
        last = input_ids[:, -1].tolist()
        tails = (self.tokenizer.batch_decode(input_ids[open_rows, max(self.start, input_ids.shape[1] - self.window):])
                 if self.stops and open_rows else [""] * len(open_rows))
        for i, tail in zip(open_rows, tails):
            if last[i] in self.eos:
                self.end[i], self.reason[i] = n, "eos"
            elif any(s in tail for s in self.stops):
                self.end[i], self.reason[i] = n, "stop"
            elif n >= self.max_new[i]:
                self.end[i], self.reason[i] = n, "length"
        return torch.tensor([e is not None for e in self.end], device=input_ids.device)


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

    @property
    def lockstep(self) -> bool:
        return many_ranks()  # a sharded model's generate needs every rank

    @torch.no_grad()
    def generate_turns(self, contexts: list[list[int]], seeds: list[int], max_new: list[int],
                       stop: list[str]) -> list[TurnOut]:
        """See :class:`~grpo_kit.rollout.base.TurnSampler`: one row per context, each with its own
        Gumbel noise stream (``seeds[i]``), so a row does not depend on the rows beside it."""
        c, dev = self.cfg, self.model.device
        width, pad = max(len(p) for p in contexts), self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in contexts], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in contexts], device=dev)
        recorder = _RecordLogprobs() if self.logprobs else None
        procs = [TemperatureLogitsWarper(c.temperature)] if c.temperature != 1.0 else []
        if c.top_k:
            procs.append(TopKLogitsWarper(c.top_k))
        if c.top_p < 1.0:
            procs.append(TopPLogitsWarper(c.top_p))
        ends = _TurnEnd(self.tokenizer, stop, self.eos_ids, width, max_new)
        gen = self._generation_config()
        gen.max_new_tokens, gen.stop_strings = max(max_new), None
        was_training = self.model.training
        self.model.eval()
        with gathered(self.model):
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=gen,
                                      logits_processor=LogitsProcessorList([*procs, *([recorder] if recorder else []),
                                                                            _PromptNoise(seeds, 1, dev)]),
                                      stopping_criteria=StoppingCriteriaList([ends]), synced_gpus=many_ranks())
        self.model.train(was_training)
        new = out.sequences[:, width:]  # [R, T]
        logp = recorder.finish(new[:, -1]).tolist() if recorder is not None and new.shape[1] else None
        rows = new.tolist()
        turns = []
        for i, seq in enumerate(rows):
            n = ends.end[i] if ends.end[i] is not None else len(seq)
            reason = ends.reason[i] or "length"
            turns.append(TurnOut(seq[:n], logp[i][:n] if logp is not None else None, reason))
        return turns

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
