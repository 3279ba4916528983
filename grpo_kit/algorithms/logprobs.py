"""Per-token log-probabilities and entropies from logits, in bounded memory.

The naive ``log_softmax(logits.float(), -1).gather(-1, labels)`` materialises two float32
``[B, T, V]`` tensors (the upcast and the log-softmax): at Qwen2.5's V = 151,936 and 4 x 1024
tokens that is 2 x 2.5 GB on top of the 1.2 GB of bf16 logits, and its backward as much again.
Here the rows are processed ``chunk_size`` at a time (upcast, ``logsumexp``, ``gather``), so the
float32 working set is ``O(chunk_size * V)`` whatever B and T.

Both functions are custom autograd Functions with a chunked backward as well: the only ``[B, T, V]``
tensor they allocate is the gradient of the logits, in the logits' dtype (which autograd needs
anyway). Under ``torch.no_grad()`` nothing is saved. Double backward is not supported.

Logits and labels may have any leading dimensions (``[B, T, V]`` and ``[B, T]``, say); a logits
tensor that is a strided view (``logits[:, prompt_len - 1:-1]``) is read in place, not copied.

The temperature must be the one the sampler used: ``pi(y) = softmax(z / temperature)_y``.

To avoid the bf16 logits and their gradient as well, compute the log-probs from the last hidden
states and the ``lm_head`` weight with :func:`grpo_kit.algorithms.fused.hidden_logprobs`.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

CHUNK_ELEMENTS = {"cpu": 2**23, "other": 2**25}
"""Default chunk size, in logits elements, per device type. CPU: 2**23 (55 tokens at V = 151,936,
two 32 MiB float32 buffers): within cache, yet few enough chunks that the per-op thread
synchronisation stays cheap on a busy machine (smaller chunks were faster on an idle 2-core machine
and several times slower on a shared one). Accelerators: 2**25 (220 tokens, 128 MiB), so that
kernel launches stay few."""


def _row_blocks(x: Tensor) -> list[Tensor]:
    """2-D ``[rows, V]`` views covering ``x``'s leading dimensions in order, without copying."""
    if x.dim() == 2:
        return [x]
    try:
        return [x.view(-1, x.shape[-1])]
    except RuntimeError:  # a strided view whose leading dims cannot be merged: split the first
        return [block for sub in x.unbind(0) for block in _row_blocks(sub)]


def _chunks(logits: Tensor, chunk_size: int) -> Iterator[tuple[Tensor, int, int]]:
    """``(rows [c, V], lo, hi)``: chunks of at most ``chunk_size`` rows and their flat row range."""
    offset = 0
    for block in _row_blocks(logits):
        for start in range(0, block.shape[0], chunk_size):
            rows = block[start : start + chunk_size]
            yield rows, offset + start, offset + start + rows.shape[0]
        offset += block.shape[0]


def _scratch(logits: Tensor, chunk_size: int, n: int) -> list[Tensor]:
    """``n`` float32 (float64 for float64 logits) ``[chunk, V]`` work buffers, reused by every chunk.

    Allocating them once per call rather than once per chunk matters on CPU: fresh multi-MiB
    allocations are fresh pages from the OS, and the page faults made the loop several times slower.
    """
    rows = min(chunk_size, logits[..., 0].numel())
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return [torch.empty(rows, logits.shape[-1], dtype=dtype, device=logits.device) for _ in range(n)]


def _load(buf: Tensor, rows: Tensor, temperature: float) -> Tensor:
    """``rows / temperature`` upcast into the first ``len(rows)`` rows of ``buf``: ``[c, V]``."""
    x = buf[: rows.shape[0]].copy_(rows)  # [c, V]
    return x if temperature == 1.0 else x.div_(temperature)


def _exp_shifted(x: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
    """``out = exp(x - m)`` with ``m`` the row max, and ``logsumexp(x)`` per row ``[c]``."""
    m = x.amax(-1, keepdim=True)  # [c, 1]
    m = torch.where(m.isfinite(), m, 0.0)  # a row of -inf: lse = -inf, not NaN
    torch.sub(x, m, out=out).exp_()
    return out, out.sum(-1).log_() + m.squeeze(-1)  # [c, V], [c]


def _checked_chunk_size(logits: Tensor, temperature: float, chunk_size: int | None) -> int:
    """Validate the arguments; return the chunk size in rows (the device default for None)."""
    if logits.dim() < 2:
        raise ValueError(f"logits must be [..., V], got shape {tuple(logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size is None:
        budget = CHUNK_ELEMENTS["cpu" if logits.device.type == "cpu" else "other"]
        return max(1, budget // max(1, logits.shape[-1]))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, temperature: float, chunk_size: int) -> Tensor:
        flat_labels = labels.reshape(-1)  # [N]
        x_buf, e_buf = _scratch(logits, chunk_size, 2)
        logp = torch.empty(flat_labels.shape, dtype=x_buf.dtype, device=logits.device)  # [N]
        lse = torch.empty_like(logp)  # [N]
        for rows, lo, hi in _chunks(logits, chunk_size):
            x = _load(x_buf, rows, temperature)  # [c, V]
            _, lse[lo:hi] = _exp_shifted(x, e_buf[: hi - lo])
            logp[lo:hi] = x.gather(-1, flat_labels[lo:hi, None]).squeeze(-1) - lse[lo:hi]
        ctx.save_for_backward(logits, flat_labels, lse)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        return logp.view(labels.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logp: Tensor):
        # d logp_y / d z_k = (1[k = y] - softmax(z / tau)_k) / tau
        logits, flat_labels, lse = ctx.saved_tensors
        (buf,) = _scratch(logits, ctx.chunk_size, 1)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)  # [..., V]
        grad_rows = grad.view(-1, logits.shape[-1])  # [N, V]
        g = grad_logp.reshape(-1).to(lse.dtype) / ctx.temperature  # [N]
        for rows, lo, hi in _chunks(logits, ctx.chunk_size):
            p = _load(buf, rows, ctx.temperature).sub_(lse[lo:hi, None]).exp_()  # [c, V] softmax
            p.mul_(-g[lo:hi, None]).scatter_add_(-1, flat_labels[lo:hi, None], g[lo:hi, None])
            grad_rows[lo:hi] = p
        return grad, None, None, None


class _TokenEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, temperature: float, chunk_size: int) -> Tensor:
        x_buf, e_buf = _scratch(logits, chunk_size, 2)
        entropy = torch.empty(logits.shape[:-1].numel(), dtype=x_buf.dtype, device=logits.device)  # [N]
        lse = torch.empty_like(entropy)  # [N]
        for rows, lo, hi in _chunks(logits, chunk_size):
            x = _load(x_buf, rows, temperature)  # [c, V]
            e, lse[lo:hi] = _exp_shifted(x, e_buf[: hi - lo])  # e = exp(x - max) [c, V]
            p = e.div_(e.sum(-1, keepdim=True))  # [c, V] softmax
            entropy[lo:hi] = lse[lo:hi] - p.mul_(x).sum(-1)  # H = lse - sum_k p_k x_k
        ctx.save_for_backward(logits, lse, entropy)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        return entropy.view(logits.shape[:-1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_entropy: Tensor):
        # d H / d z_k = -p_k (log p_k + H) / tau
        logits, lse, entropy = ctx.saved_tensors
        log_p_buf, p_buf = _scratch(logits, ctx.chunk_size, 2)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)  # [..., V]
        grad_rows = grad.view(-1, logits.shape[-1])  # [N, V]
        g = grad_entropy.reshape(-1).to(lse.dtype) / ctx.temperature  # [N]
        for rows, lo, hi in _chunks(logits, ctx.chunk_size):
            log_p = _load(log_p_buf, rows, ctx.temperature).sub_(lse[lo:hi, None])  # [c, V]
            p = torch.exp(log_p, out=p_buf[: hi - lo])  # [c, V]
            grad_rows[lo:hi] = log_p.add_(entropy[lo:hi, None]).mul_(p).mul_(-g[lo:hi, None])
        return grad, None, None


def token_logprobs(
    logits: Tensor, labels: Tensor, *, temperature: float = 1.0, chunk_size: int | None = None
) -> Tensor:
    """``log softmax(logits / temperature)[label]`` per token, in chunks of ``chunk_size`` tokens.

    ``logp_t = z_t[y_t] / tau - logsumexp_k(z_t[k] / tau)``, computed in float32 (float64 for
    float64 logits) one chunk of rows at a time; differentiable, with a chunked backward.

    Args:
        logits: ``[B, T, V]`` (any leading dims), typically bf16 from the model.
        labels: ``[B, T]`` token ids in ``[0, V)`` (put any valid id at padding, and mask the result).
        temperature: the sampler's temperature.
        chunk_size: tokens per chunk; None: ``CHUNK_ELEMENTS[device] // V``. The float32 scratch
            is ``2 * chunk_size * V * 4`` bytes.
    Returns:
        ``[B, T]`` float32 log-probs.

    >>> token_logprobs(torch.tensor([[[0.0, 0.0], [0.0, 2.0]]]), torch.tensor([[0, 1]]), temperature=2.0)
    tensor([[-0.6931, -0.3133]])
    """
    chunk_size = _checked_chunk_size(logits, temperature, chunk_size)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
    return _TokenLogprobs.apply(logits, labels, float(temperature), chunk_size)


def token_entropy(logits: Tensor, *, temperature: float = 1.0, chunk_size: int | None = None) -> Tensor:
    """Entropy of ``softmax(logits / temperature)`` per token, in chunks of ``chunk_size`` tokens.

    ``H_t = -sum_k p_k log p_k = logsumexp(x) - sum_k p_k x_k`` with ``x = z_t / tau``, ``p = softmax(x)``.

    Args:
        logits: ``[B, T, V]`` (any leading dims).
        temperature, chunk_size: as in :func:`token_logprobs`.
    Returns:
        ``[B, T]`` float32 entropies (nats); differentiable, with a chunked backward.

    >>> token_entropy(torch.zeros(1, 2, 4))  # uniform over 4: log 4
    tensor([[1.3863, 1.3863]])
    """
    chunk_size = _checked_chunk_size(logits, temperature, chunk_size)
    return _TokenEntropy.apply(logits, float(temperature), chunk_size)


__all__ = ["CHUNK_ELEMENTS", "token_entropy", "token_logprobs"]
