"""The rollout record -> padded tensors, once per step; and the forward pass that gives token log-probs.

Layout of one sequence (row): ``[pad .. pad, prompt, completion, pad .. pad]``: prompts are
left-padded to P, completions right-padded to T, so every completion starts at column P and the
logits that predict it are columns ``P-1 .. P+T-2``. Position ids count real tokens only.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from grpo_kit.algorithms.fused import hidden_logprobs
from grpo_kit.algorithms.logprobs import token_entropy, token_logprobs
from grpo_kit.errors import ConfigError
from grpo_kit.records import RolloutBatch


@dataclass
class Batch:
    input_ids: torch.Tensor  # [N, P+T]  N = B*G sequences
    attention_mask: torch.Tensor  # [N, P+T]
    completion_ids: torch.Tensor  # [N, T]
    completion_mask: torch.Tensor  # [N, T] 1 on sampled tokens (0 on padding and on a tool's output)
    rewards: torch.Tensor  # [B, G] combined reward, NaN where no reward applied
    truncated: torch.Tensor  # [N] bool, cut at max_new_tokens
    sampler_logp: torch.Tensor | None  # [N, T]
    prompt_len: int  # P
    reward_parts: torch.Tensor | None = None  # [B, G, K] each reward alone, NaN where it does not apply
    reward_weights: torch.Tensor | None = None  # [K] their weights (algorithm.reward_norm: per_reward)
    ref_logp: torch.Tensor | None = None  # [N, T] the reference's, from the rollout process (train.ref_in_rollout)

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        """``[N]`` real tokens per sequence (prompt + completion)."""
        return self.attention_mask.sum(-1)

    def rows(self, idx: torch.Tensor) -> "Batch":
        """The sequences ``idx`` (a 1-D index tensor); ``rewards`` stays whole (it is per group)."""
        sl = lambda t: None if t is None else t[idx]  # noqa: E731
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.completion_ids[idx],
                     self.completion_mask[idx], self.rewards, self.truncated[idx],
                     sl(self.sampler_logp), self.prompt_len, self.reward_parts, self.reward_weights,
                     sl(self.ref_logp))


def reward_parts(rb: RolloutBatch, weights: dict[str, float] | None, G: int,
                 device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``([B, G, K], [K])``: each reward's scores (NaN where it does not apply or failed) and its
    weight, for the rewards named in ``weights`` (label -> weight); ``(None, None)`` without."""
    if not weights:
        return None, None
    missing = [k for k in weights if k not in rb.rewards]
    if missing:
        raise ValueError(f"the record has no scores of the rewards {missing}; it has {sorted(rb.rewards)}")
    cols = [[float("nan") if v is None else float(v) for v in rb.rewards[k]] for k in weights]
    parts = torch.tensor(cols, dtype=torch.float32).T.reshape(-1, G, len(weights))  # [B, G, K]
    return parts.to(device), torch.tensor(list(weights.values()), dtype=torch.float32, device=device)


def make_batch(rb: RolloutBatch, pad_id: int, device: torch.device,
               weights: dict[str, float] | None = None) -> Batch:
    """Tensors of a scored rollout batch whose groups all have G completions, in group order;
    ``weights`` (reward label -> weight): also each reward's scores (``reward_parts``)."""
    groups = rb.groups()
    G = len(groups[0])
    if any(len(g) != G for g in groups) or [i for g in groups for i in g] != list(range(rb.size)):
        raise ValueError("make_batch needs G completions per group, stored group by group")
    P = max(len(p) for p in rb.prompt_ids)
    T = max(1, max(len(c) for c in rb.completion_ids))
    ids, att, comp, cmask, lps, refs = [], [], [], [], [], []
    has_lp, has_ref = rb.sampler_logprobs is not None, rb.ref_logprobs is not None
    for i, c in enumerate(rb.completion_ids):
        m = [1] * len(c) if rb.completion_masks is None else list(rb.completion_masks[i])  # 0: a tool's
        p = rb.prompt_ids[rb.group_index[i]]
        lp, rp = P - len(p), T - len(c)
        ids.append([pad_id] * lp + list(p) + list(c) + [pad_id] * rp)
        att.append([0] * lp + [1] * (len(p) + len(c)) + [0] * rp)
        comp.append(list(c) + [pad_id] * rp)
        cmask.append(m + [0] * rp)
        if has_lp:
            lps.append(list(rb.sampler_logprobs[i]) + [0.0] * rp)
        if has_ref:
            refs.append(list(rb.ref_logprobs[i]) + [0.0] * rp)
    rewards = torch.tensor([float("nan") if r is None else r for r in rb.reward],
                           dtype=torch.float32).view(len(groups), G)  # [B, G]
    t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=device)  # noqa: E731
    return Batch(t(ids), t(att), t(comp), t(cmask), rewards.to(device), t(rb.truncated, torch.bool),
                 t(lps, torch.float32) if has_lp else None, P, *reward_parts(rb, weights, G, device),
                 t(refs, torch.float32) if has_ref else None)


@dataclass
class Masks:
    """The rows' masks and rewards without their tokens: what the loss mask, the advantages and
    the normalisers read (every rank builds it for the whole step from the gathered record)."""

    completion_mask: torch.Tensor  # [N, T]
    rewards: torch.Tensor  # [B, G]
    truncated: torch.Tensor  # [N] bool
    lengths: torch.Tensor  # [N] prompt + completion tokens
    reward_parts: torch.Tensor | None = None  # [B, G, K], see Batch
    reward_weights: torch.Tensor | None = None  # [K]

    @classmethod
    def of(cls, rb: RolloutBatch, device: torch.device, weights: dict[str, float] | None = None) -> "Masks":
        lens = [len(c) for c in rb.completion_ids]
        T = max(1, max(lens))
        mask = torch.arange(T)[None, :] < torch.tensor(lens)[:, None]  # [N, T]
        if rb.completion_masks is not None:  # multi-turn: 0 on the tokens a tool inserted
            mask = torch.tensor([list(m) + [0] * (T - len(m)) for m in rb.completion_masks]).bool()
        G = len(rb.groups()[0])
        rewards = torch.tensor([float("nan") if r is None else r for r in rb.reward], dtype=torch.float32)
        total = [len(rb.prompt_ids[rb.group_index[i]]) + n for i, n in enumerate(lens)]
        return cls(mask.long().to(device), rewards.view(-1, G).to(device),
                   torch.tensor(rb.truncated, dtype=torch.bool, device=device), torch.tensor(total, device=device),
                   *reward_parts(rb, weights, G, device))


def fused_head(model) -> torch.nn.Linear:
    """The output head that ``train.logprobs: fused`` folds into the log-probs: a plain
    ``nn.Linear`` (a peft model's base model's; LoRA on ``lm_head`` itself is refused)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or hasattr(head, "base_layer"):
        raise ConfigError(f"train.logprobs: fused needs the model's output head to be a plain nn.Linear; "
                          f"{type(base).__name__} has {type(head).__name__} (LoRA on lm_head? use "
                          "train.logprobs: logits)")
    return head


@contextmanager
def _fused(model, labels: torch.Tensor, *, temperature: float, with_entropy: bool, entropy_grad: bool):
    """While inside, the head's forward returns ``[..., 1]`` log-probs of ``labels`` (``[..., 2]``
    with the entropies) in place of the logits: :func:`hidden_logprobs` of the hidden states it is
    given, so the ``[.., V]`` logits are never built. Swapping the head's forward, rather than calling
    the backbone and the head ourselves, keeps everything inside the root model's forward: FSDP2 has
    the head's weight gathered there, and its backward hooks see the output."""
    head = fused_head(model)

    def forward(hidden: torch.Tensor) -> torch.Tensor:  # [..., K, H] -> [..., K, 1 or 2]
        lp, ent = hidden_logprobs(hidden, head.weight, labels.view(hidden.shape[:-1]), temperature=temperature,
                                  bias=head.bias, with_entropy=with_entropy, entropy_grad=entropy_grad)
        return torch.stack([lp, ent], -1) if with_entropy else lp[..., None]

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def forward_logprobs(model, batch: Batch, *, temperature: float, autocast: bool,
                     with_entropy: bool = False, entropy_grad: bool = False,
                     packed: bool = False, fused: bool = False,
                     shared_prefix: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs ``[N, T]`` of the completion tokens (and their entropies) under ``model``;
    ``packed``: in one row without padding (see :func:`forward_logprobs_packed`); ``fused``: from
    the last hidden states and the head's weight, the logits never built
    (:func:`grpo_kit.algorithms.fused.hidden_logprobs`, float32 tiles; ``train.logprobs: fused``);
    ``shared_prefix``: the rows' common prompts computed once (:func:`prefix_cache`).

    The last column (the last completion token) predicts nothing the loss needs and is not fed:
    under the causal mask no other column depends on it."""
    if packed:
        return forward_logprobs_packed(model, batch, temperature=temperature, autocast=autocast,
                                       with_entropy=with_entropy, entropy_grad=entropy_grad, fused=fused)
    T = batch.completion_ids.shape[1]
    dev = batch.input_ids.device
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if autocast else nullcontext()
    P = batch.prompt_len
    ids, att = batch.input_ids[:, :P + T - 1], batch.attention_mask[:, :P + T - 1]
    if shared_prefix and P == 1:  # a masked column before it: the same two calls as for any other prompts
        ids, att, P = torch.cat([ids[:, :1], ids], 1), torch.cat([torch.zeros_like(att[:, :1]), att], 1), 2
    if bool(att[:, :P].all()):  # no left padding: the causal mask alone is exact (right padding comes after
        att, pos = None, torch.arange(P + T - 1, device=dev).expand_as(ids)  # every real token)
    else:
        pos = (att.cumsum(-1) - 1).clamp(min=0)  # [N, P+T-1]
    cache, start = None, 0
    if shared_prefix:  # then the forward below starts at the last prompt token
        with ctx:
            cache, start = prefix_cache(model, ids[:, :P - 1], pos[:, :P - 1], None if att is None else att[:, :P - 1]), P - 1
    head = (_fused(model, batch.completion_ids, temperature=temperature, with_entropy=with_entropy,
                   entropy_grad=entropy_grad) if fused else nullcontext())
    with ctx, head:  # column P-1+t predicts completion token t: the last T columns
        out = model(input_ids=ids[:, start:], attention_mask=att, position_ids=pos[:, start:],
                    past_key_values=cache, use_cache=cache is not None, logits_to_keep=T)
    if fused:
        ent = out.logits[..., 1] if with_entropy else None
        return out.logits[..., 0], ent if entropy_grad or ent is None else ent.detach()
    logits = out.logits  # [N, T, V], contiguous: only the columns that predict completion tokens
    logp = token_logprobs(logits, batch.completion_ids, temperature=temperature)  # [N, T]
    ent = None
    if with_entropy:
        ent = token_entropy(logits if entropy_grad else logits.detach(), temperature=temperature)  # [N, T]
    return logp, ent


def prefix_cache(model, ids: torch.Tensor, pos: torch.Tensor, att: torch.Tensor | None):
    """``train.shared_prefix``: the key/value cache of the rows' first columns ``ids`` ``[N, L]``
    (a group's completions share their prompt), each distinct row computed once and the cache then
    indexed out to all ``N`` rows (two calls whatever the batch, even with nothing to share).

    The completions' forward continues from it, as generation does from a prefilled prompt, so the
    prompt's L tokens cost one forward per group instead of one per completion (G times fewer), in
    the backward too: the gradient through the indexed cache sums over the group's rows. Exact:
    causal attention makes a prompt's keys and values independent of what follows it (tested equal
    to the full forward, log-probs and gradients, within 1e-5). As PrefixGrouper (arXiv 2506.05433)
    does with its own attention; this uses the model's cache (transformers' ``DynamicCache``) and
    needs one of full-attention layers."""
    rows = ids if att is None else torch.cat([ids, att], 1)
    uniq, inverse = torch.unique(rows, dim=0, return_inverse=True)  # [U, L or 2L], [N]
    first = torch.zeros(len(uniq), dtype=torch.long, device=ids.device).scatter_(
        0, inverse, torch.arange(len(ids), device=ids.device))  # a row of each distinct prefix
    out = model(input_ids=ids[first], attention_mask=None if att is None else att[first],
                position_ids=pos[first], use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    from transformers.cache_utils import DynamicLayer  # its sliding-window and other layers are subclasses

    layers = getattr(cache, "layers", None)
    if cache is None or not layers or any(type(layer) is not DynamicLayer for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers or []}) or [type(cache).__name__]
        raise ConfigError(f"train.shared_prefix needs the model's key/value cache of full-attention layers "
                          f"(transformers' DynamicCache of DynamicLayer); {type(model).__name__} gave {kinds}: "
                          "set train.shared_prefix: false")
    cache.batch_select_indices(inverse)  # [U, ...] -> [N, ...], differentiable (an index)
    return cache


def pack(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's real tokens in one row, without padding: ``(input_ids [1, S], position_ids [1, S],
    keep [K], rows [K], cols [K])``. Sequence i's tokens (prompt then completion) follow sequence
    i-1's; position ids restart at 0 for each sequence, which is how transformers recognises packed
    sequences (attention then stays within each one). Completion token ``(rows[k], cols[k])`` of the
    padded layout is predicted at packed column ``keep[k]``.

    >>> b = Batch(torch.tensor([[0, 5, 6, 7, 0], [8, 9, 6, 7, 1]]), torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
    ...           torch.tensor([[6, 7, 0], [6, 7, 1]]), torch.tensor([[1, 1, 0], [1, 1, 1]]), torch.zeros(1, 2),
    ...           torch.zeros(2, dtype=torch.bool), None, 2)
    >>> ids, pos, keep, rows, cols = pack(b)
    >>> ids.tolist(), pos.tolist(), keep.tolist()
    ([[5, 6, 7, 8, 9, 6, 7, 1]], [[0, 1, 2, 0, 1, 2, 3, 4]], [0, 1, 4, 5, 6])
    """
    real = batch.attention_mask.bool()  # [n, P+T]
    lens = real.sum(-1)  # [n] prompt + completion tokens per sequence
    ids = batch.input_ids[real]  # [S], row by row
    pos = (batch.attention_mask.cumsum(-1) - 1)[real]  # [S], from 0 in each sequence
    starts = lens.cumsum(0) - lens  # [n] where each sequence begins in the row
    prompt_lens = real[:, :batch.prompt_len].sum(-1)  # [n]
    rows, cols = batch.completion_mask.bool().nonzero(as_tuple=True)  # [K] each
    keep = starts[rows] + prompt_lens[rows] + cols - 1  # [K] the column that predicts each completion token
    return ids[None], pos[None], keep, rows, cols


def forward_logprobs_packed(model, batch: Batch, *, temperature: float, autocast: bool,
                            with_entropy: bool = False, entropy_grad: bool = False, fused: bool = False
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`forward_logprobs` on the batch packed into one row (:func:`pack`): no compute on
    padding, and only the logits that predict completion tokens are made. Results in the padded
    ``[N, T]`` layout, 0 where ``completion_mask`` is 0. The model must support packed sequences
    through restarting position ids with no attention mask (transformers' causal LMs do: with
    flash-attention 2 through its variable-length path; with sdpa or eager through a block-diagonal
    mask of ``S x S``)."""
    ids, pos, keep, rows, cols = pack(batch)
    empty = keep.numel() == 0  # no completion token: one column anyway, so every rank runs the forward
    dev = ids.device
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if autocast else nullcontext()
    labels = batch.completion_ids[rows, cols] if not empty else torch.zeros(1, dtype=torch.long, device=dev)  # [K]
    head = (_fused(model, labels, temperature=temperature, with_entropy=with_entropy, entropy_grad=entropy_grad)
            if fused else nullcontext())
    with ctx, head:
        out = model(input_ids=ids, position_ids=pos, use_cache=False,
                    logits_to_keep=keep if not empty else torch.zeros(1, dtype=torch.long, device=dev))
    logits = out.logits[0]  # [K, V]; fused: [K, 1] log-probs or [K, 2] log-probs, entropies
    shape = batch.completion_ids.shape  # [n, T]
    if empty:
        zero = logits.float().sum() * 0.0  # keeps the graph (and FSDP's backward hooks) connected
        return zero + torch.zeros(shape, device=dev), (zero + torch.zeros(shape, device=dev)) if with_entropy else None
    if fused:
        place = lambda v: torch.zeros(shape, dtype=v.dtype, device=dev).index_put((rows, cols), v)  # noqa: E731
        ent = place(logits[:, 1] if entropy_grad else logits[:, 1].detach()) if with_entropy else None
        return place(logits[:, 0]), ent
    lp = token_logprobs(logits, labels, temperature=temperature)  # [K]
    logp = torch.zeros(shape, dtype=lp.dtype, device=dev).index_put((rows, cols), lp)  # [n, T]
    ent = None
    if with_entropy:
        e = token_entropy(logits if entropy_grad else logits.detach(), temperature=temperature)  # [K]
        ent = torch.zeros(shape, dtype=e.dtype, device=dev).index_put((rows, cols), e)
    return logp, ent
