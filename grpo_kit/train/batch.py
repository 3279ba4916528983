"""The rollout record -> padded tensors, once per step; and the forward pass that gives token log-probs.

Layout of one sequence (row): ``[pad .. pad, prompt, completion, pad .. pad]``: prompts are
left-padded to P, completions right-padded to T, so every completion starts at column P and the
logits that predict it are columns ``P-1 .. P+T-2``. Position ids count real tokens only.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from grpo_kit.algorithms.logprobs import token_entropy, token_logprobs
from grpo_kit.records import RolloutBatch


@dataclass
class Batch:
    input_ids: torch.Tensor  # [N, P+T]  N = B*G sequences
    attention_mask: torch.Tensor  # [N, P+T]
    completion_ids: torch.Tensor  # [N, T]
    completion_mask: torch.Tensor  # [N, T] 1 on sampled tokens
    rewards: torch.Tensor  # [B, G] combined reward, NaN where no reward applied
    truncated: torch.Tensor  # [N] bool, cut at max_new_tokens
    sampler_logp: torch.Tensor | None  # [N, T]
    prompt_len: int  # P

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, idx: torch.Tensor) -> "Batch":
        """The sequences ``idx`` (a 1-D index tensor); ``rewards`` stays whole (it is per group)."""
        sl = lambda t: None if t is None else t[idx]  # noqa: E731
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.completion_ids[idx],
                     self.completion_mask[idx], self.rewards, self.truncated[idx],
                     sl(self.sampler_logp), self.prompt_len)


def make_batch(rb: RolloutBatch, pad_id: int, device: torch.device) -> Batch:
    """Tensors of a scored rollout batch whose groups all have G completions, in group order."""
    groups = rb.groups()
    G = len(groups[0])
    if any(len(g) != G for g in groups) or [i for g in groups for i in g] != list(range(rb.size)):
        raise ValueError("make_batch needs G completions per group, stored group by group")
    P = max(len(p) for p in rb.prompt_ids)
    T = max(1, max(len(c) for c in rb.completion_ids))
    ids, att, comp, cmask, lps = [], [], [], [], []
    has_lp = rb.sampler_logprobs is not None
    for i, c in enumerate(rb.completion_ids):
        p = rb.prompt_ids[rb.group_index[i]]
        lp, rp = P - len(p), T - len(c)
        ids.append([pad_id] * lp + list(p) + list(c) + [pad_id] * rp)
        att.append([0] * lp + [1] * (len(p) + len(c)) + [0] * rp)
        comp.append(list(c) + [pad_id] * rp)
        cmask.append([1] * len(c) + [0] * rp)
        if has_lp:
            lps.append(list(rb.sampler_logprobs[i]) + [0.0] * rp)
    rewards = torch.tensor([float("nan") if r is None else r for r in rb.reward],
                           dtype=torch.float32).view(len(groups), G)  # [B, G]
    t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=device)  # noqa: E731
    return Batch(t(ids), t(att), t(comp), t(cmask), rewards.to(device), t(rb.truncated, torch.bool),
                 t(lps, torch.float32) if has_lp else None, P)


@dataclass
class Masks:
    """The rows' masks and rewards without their tokens: what the loss mask, the advantages and
    the normalisers read (every rank builds it for the whole step from the gathered record)."""

    completion_mask: torch.Tensor  # [N, T]
    rewards: torch.Tensor  # [B, G]
    truncated: torch.Tensor  # [N] bool

    @classmethod
    def of(cls, rb: RolloutBatch, device: torch.device) -> "Masks":
        lens = [len(c) for c in rb.completion_ids]
        T = max(1, max(lens))
        mask = torch.arange(T)[None, :] < torch.tensor(lens)[:, None]  # [N, T]
        G = len(rb.groups()[0])
        rewards = torch.tensor([float("nan") if r is None else r for r in rb.reward], dtype=torch.float32)
        return cls(mask.long().to(device), rewards.view(-1, G).to(device),
                   torch.tensor(rb.truncated, dtype=torch.bool, device=device))


def forward_logprobs(model, batch: Batch, *, temperature: float, autocast: bool,
                     with_entropy: bool = False, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs ``[N, T]`` of the completion tokens (and their entropies) under ``model``."""
    T = batch.completion_ids.shape[1]
    pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)  # [N, P+T]
    dev = batch.input_ids.device
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if autocast else nullcontext()
    P = batch.prompt_len
    keep = torch.arange(P - 1, P + T - 1, device=dev)  # column P-1+t predicts completion token t
    with ctx:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos,
                    logits_to_keep=keep, use_cache=False)
    logits = out.logits  # [N, T, V], contiguous: only the columns that predict completion tokens
    logp = token_logprobs(logits, batch.completion_ids, temperature=temperature)  # [N, T]
    ent = None
    if with_entropy:
        ent = token_entropy(logits if entropy_grad else logits.detach(), temperature=temperature)  # [N, T]
    return logp, ent
