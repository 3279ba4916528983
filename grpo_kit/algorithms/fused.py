"""Per-token log-probs and entropies straight from the last hidden states, never building the logits.

``token_logprobs`` (:mod:`grpo_kit.algorithms.logprobs`) bounds the float32 working set, but the model
still materialises the bf16 logits ``[N, T, V]`` and autograd their gradient (1.2 GB each at
V = 151,936 and 4 x 1024 tokens). Here the ``lm_head`` is folded in, as in Liger's fused linear
cross-entropy and Apple's Cut Cross-Entropy: with ``h_t`` the hidden state ``[H]``, ``W [V, H]`` the
``lm_head`` weight and ``b [V]`` its bias,

    x_t = (W h_t + b) / tau                         # [V], one tile at a time, never whole
    logp_t = x_t[y_t] - logsumexp_k x_t[k]
    H_t = logsumexp_k x_t[k] - sum_k p_k x_k,       p = softmax(x_t)

The logits are computed in float32 (float64 for float64 inputs) tile by tile: ``chunk_size``
tokens by ``vocab_chunk`` vocabulary rows, vocabulary blocks outermost so that each block of ``W``
is upcast once per pass; the log-sum-exp runs online over the vocabulary blocks (a running max,
sum and, for the entropy, ``sum_k p_k x_k``, rescaled as the max grows, as in flash attention).

Gradients, with ``g`` the incoming gradient of ``logp_t`` and ``g'`` that of ``H_t``:

    d logp_t / d x_t[k] = 1[k = y_t] - p_k          d H_t / d x_t[k] = -p_k (x_k - mu_t),  mu_t = sum_j p_j x_j
    d / dh_t = W^T (d / dx_t) / tau                 d / dW = sum_t (d / dx_t) h_t^T / tau,  d / db = sum_t d / dx_t

``d logp_t / dh_t = (W[y_t] - E_p[W]) / tau`` does not depend on ``g``, so ``E_p[W] = sum_k p_k W_k``
(and ``sum_k p_k x_k W_k`` for the entropy) is accumulated in the forward pass with the
log-sum-exp, and the backward pass scales it by ``g``: no second pass when ``W`` is frozen (LoRA).
A trainable ``W`` (or bias) takes one more pass in the backward, which recomputes the tiles from
the saved log-sum-exp. Under ``torch.no_grad()`` (or when nothing needs a gradient) none of it is
done and nothing is saved. Double backward is not supported.

Precision: the log-probs and entropies are those of float32 logits (error vs float64 ~1e-6 at
H = 1536, V = 151,936, where building bf16 logits first costs ~1e-2). For bf16 (fp16) ``hidden`` and
``weight`` the two gradient products, ``e @ W`` and ``dx^T @ h``, take their tile operand in that
dtype and run at its speed (accumulated in float32 across tiles): the gradients are as precise as the
materialised path's, whose logit gradient is bf16, and the log-probs are unaffected.

Where torch multiplies bf16 (fp16) operands into a float32 result (``torch.mm(..., out_dtype=
torch.float32)``, cuBLAS on CUDA: PyTorch PR 150812), every product takes the bf16 operands
as they are and returns float32: the tiles are the float32 tiles (the products of bf16 numbers are
exact in float32, the sums run in float32), at bf16 matmul speed, and no float32 copy of ``W`` is
made. Elsewhere (CPU in torch 2.13: ``aten::mm.dtype`` is not implemented) the operands are upcast
to float32, same numbers at float32 matmul speed. :func:`f32_products` says which applies; the
choice is made once per device type and dtype, by trying the op. Not run on a GPU here: on CPU the
path is exercised with the upcast product standing in for the op (tests/test_logprobs.py).

Memory, besides the inputs and the gradients autograd returns: a float32 copy of ``h`` ``[N, H]``,
two float32 tiles ``[chunk_size, vocab_chunk]`` (and a bf16 copy of one), one float32 block of ``W``
``[vocab_chunk, H]``, and ``[N, H]`` float32 for each gradient kept from the forward.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

TILE_ELEMENTS = {"cpu": 2**22, "other": 2**26}
"""Default tile budget, in float32 elements, per device type: a tile is ``chunk_size`` tokens by
``TILE_ELEMENTS // max(chunk_size, H)`` vocabulary rows, so that neither the tile nor the float32
block of ``W`` exceeds it. CPU: 16 MiB; accelerators: 256 MiB."""

CHUNK_TOKENS = {"cpu": 1024, "other": 4096}
"""Default tokens per tile: enough rows that the tile matmuls run near the BLAS's peak."""


_F32_PRODUCTS: dict[tuple[str, torch.dtype], bool] = {}


def _mm_f32(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """``a @ b`` of bf16 (fp16) operands as float32 (float32 accumulation and result), into ``out``."""
    return torch.mm(a, b, out_dtype=torch.float32, out=out)


def f32_products(device: torch.device | str, dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether ``torch.mm`` multiplies ``dtype`` operands into a float32 result on ``device``'s type
    (``out_dtype=torch.float32``, also into a given ``out``): then the tiles run at ``dtype`` matmul
    speed with float32 numbers (module docstring). Tried once per device type and dtype."""
    device = torch.device(device)
    key = (device.type, dtype)
    if key not in _F32_PRODUCTS:
        a = torch.ones(2, 2, dtype=dtype, device=device)
        try:
            got = _mm_f32(a, a, out=torch.empty(2, 2, device=device))
            _F32_PRODUCTS[key] = got.dtype == torch.float32 and bool((got == 2).all())
        except (NotImplementedError, RuntimeError, TypeError):  # CPU: "Could not run 'aten::mm.dtype_out'"
            _F32_PRODUCTS[key] = False
    return _F32_PRODUCTS[key]


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def _tile(buf: Tensor, h: Tensor, w: Tensor, b: Tensor | None, temperature: float, mode: str) -> Tensor:
    """``(h w^T + b) / temperature`` into the front of the flat buffer ``buf``: ``[c, v]``. ``mode``:
    ``"f32"`` float32 ``h`` and ``w``; for bf16/fp16 ``h`` and ``w``, ``"f32out"`` the product into
    float32 (:func:`f32_products`) and ``"low"`` the product in that dtype, rounded to it (``bf16_logits``)."""
    x = buf[: h.shape[0] * w.shape[0]].view(h.shape[0], w.shape[0])  # [c, v], contiguous
    if mode == "f32":
        torch.mm(h, w.T, out=x)
    elif mode == "f32out":
        _mm_f32(h, w.T, out=x)
    else:
        x.copy_(torch.mm(h, w.T))
    if b is not None:
        x.add_(b)
    return x if temperature == 1.0 else x.div_(temperature)


def _low(hidden: Tensor, weight: Tensor) -> bool:
    """bf16 (fp16) ``hidden`` and ``weight``: the gradient products run in that dtype (see the docstring)."""
    return hidden.dtype in (torch.bfloat16, torch.float16) and weight.dtype == hidden.dtype


def _mode(hidden: Tensor, weight: Tensor, bf16_logits: bool) -> str:
    """How the tiles are multiplied (:func:`_tile`)."""
    if not _low(hidden, weight):
        return "f32"
    if bf16_logits:
        return "low"
    return "f32out" if f32_products(hidden.device, hidden.dtype) else "f32"


def _add_mm(out: Tensor, a: Tensor, b: Tensor | None, b_low: Tensor | None, f32out: bool = False) -> None:
    """``out += a @ b``; with ``b_low`` (``b`` in bf16/fp16) the product runs in that dtype, its result
    rounded to it, or (``f32out``) returned in float32."""
    if b_low is None:
        out.addmm_(a, b)
    elif f32out:
        out.add_(_mm_f32(a.to(b_low.dtype), b_low))
    else:
        out.add_(torch.mm(a.to(b_low.dtype), b_low))


def _add_at_labels(dx: Tensor, y: Tensor, g: Tensor, lo: int) -> None:
    """``dx[i, y_i - lo] += g_i`` for the rows whose label lies in the block ``[lo, lo + v)`` (no sync)."""
    inside = (y >= lo) & (y < lo + dx.shape[1])  # [c]
    dx.scatter_add_(1, (y - lo).clamp(0, dx.shape[1] - 1)[:, None], torch.where(inside, g, 0.0)[:, None])


def _online_lse(h: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, chunk: int, vchunk: int,
                acc: Tensor | None, acc_x: Tensor | None, h_low: Tensor | None,
                mode: str) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """One pass over the tiles: per token the max ``m`` of ``x``, ``s = sum_k e_k`` and
    ``t = sum_k e_k (x_k - m)`` with ``e_k = exp(x_k - m)``, each ``[N]``; and, in place, ``acc += sum_k
    e_k W_k`` and ``acc_x += sum_k e_k (x_k - m) W_k`` ``[N, H]`` where given. Running sums are
    rescaled to the new max as each vocabulary block raises it."""
    N, wd = h.shape[0], h.dtype
    m = torch.full((N,), float("-inf"), dtype=wd, device=h.device)  # [N]
    s, t = torch.zeros_like(m), torch.zeros_like(m)  # [N]
    rows = min(chunk, N)
    x_buf, e_buf = (torch.empty(rows * vchunk, dtype=wd, device=h.device) for _ in range(2))
    f32out = mode == "f32out"
    for vlo, vhi in _spans(weight.shape[0], vchunk):
        w_low = None if h_low is None else weight[vlo:vhi]  # [v, H] bf16
        w = weight[vlo:vhi].to(wd) if mode == "f32" else None  # [v, H] float32 copy (f32 mode only)
        b = None if bias is None else bias[vlo:vhi].to(wd)
        for lo, hi in _spans(N, chunk):
            x = _tile(x_buf, *((h[lo:hi], w) if w is not None else (h_low[lo:hi], w_low)), b, temperature, mode)
            m_old, m_new = m[lo:hi], torch.maximum(m[lo:hi], x.amax(-1))  # [c]
            ref = torch.where(m_new > float("-inf"), m_new, 0.0)  # all -inf so far: e = 0, not NaN
            seen = s[lo:hi] > 0  # [c] any mass so far
            shift = torch.where(seen, m_old - ref, 0.0)  # [c] old max - new max
            scale = shift.exp() * seen  # [c]
            x.sub_(ref[:, None])  # [c, v] x - m
            e = torch.exp(x, out=e_buf[: x.numel()].view_as(x))  # [c, v]
            # to the new max: sum_k e_k (x_k - m_new) = scale (t + shift s), plus this tile's
            t[lo:hi] = (t[lo:hi] + shift * s[lo:hi]) * scale
            s[lo:hi] = s[lo:hi] * scale + e.sum(-1)
            if acc_x is not None:
                acc_x[lo:hi].addcmul_(acc[lo:hi], shift[:, None]).mul_(scale[:, None])
            if acc is not None:
                _add_mm(acc[lo:hi].mul_(scale[:, None]), e, w, w_low, f32out)
            ex = x.mul_(e)  # [c, v] e_k (x_k - m) (x is not needed again)
            t[lo:hi] += ex.sum(-1)
            if acc_x is not None:
                _add_mm(acc_x[lo:hi], ex, w, w_low, f32out)
            m[lo:hi] = m_new
    return m, s, t


class _HiddenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, temperature: float,
                chunk: int, vchunk: int, entropy_grad: bool, bf16_logits: bool, grad: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
        with torch.autocast(hidden.device.type, enabled=False):  # float32 tiles, even inside autocast
            ctx.mode = _mode(hidden, weight, bf16_logits)
            return _HiddenLogprobs._forward(ctx, hidden, weight, bias, labels, temperature, chunk, vchunk,
                                            entropy_grad, grad)  # fmt: skip

    @staticmethod
    def _forward(ctx, hidden, weight, bias, labels, temperature, chunk, vchunk, entropy_grad, grad):
        need_h, need_w, need_b = (grad and n for n in ctx.needs_input_grad[:3])  # grad: was grad mode on
        wd = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
        h = hidden.reshape(-1, hidden.shape[-1]).to(wd)  # [N, H]
        y = labels.reshape(-1)  # [N]
        N, tokens = h.shape[0], _spans(h.shape[0], chunk)
        y0 = y.clamp(min=0)  # ignored labels (< 0) read row 0, and are zeroed below
        x_y = torch.empty(N, dtype=wd, device=h.device)  # [N] label logits
        for lo, hi in tokens:
            x_y[lo:hi] = torch.linalg.vecdot(h[lo:hi], weight[y0[lo:hi]].to(wd))
        if ctx.mode == "low":  # rounded as the tiles' bf16 matmul rounds them
            x_y.copy_(x_y.to(hidden.dtype))
        if bias is not None:
            x_y += bias[y0].to(wd)
        x_y /= temperature
        acc = torch.zeros_like(h) if need_h else None  # [N, H] sum_k e_k W_k
        acc_x = torch.zeros_like(h) if need_h and entropy_grad else None  # [N, H] sum_k e_k (x_k - m) W_k
        h_low = hidden.reshape(-1, hidden.shape[-1]) if _low(hidden, weight) else None  # [N, H] bf16
        m, s, t = _online_lse(h, weight, bias, temperature, chunk, vchunk, acc, acc_x, h_low, ctx.mode)
        mu_m = t / s  # [N] sum_k p_k x_k - m
        lse, mu = m + s.log(), m + mu_m  # [N]
        valid = y >= 0
        logp = torch.where(valid, x_y - lse, 0.0)  # [N]
        entropy = s.log() - mu_m  # [N] lse - mu, without the cancellation of two large numbers
        grad_logp_h = grad_ent_h = None
        if acc is not None:
            e_w = acc.div_(s[:, None])  # [N, H] E_p[W]
            if acc_x is not None:  # dH/dh = -(E_p[(x - m) W] - (mu - m) E_p[W]) / tau
                grad_ent_h = acc_x.div_(s[:, None]).addcmul_(e_w, mu_m[:, None], value=-1).div_(-temperature)
            for lo, hi in tokens:  # dlogp/dh = (W[y] - E_p[W]) / tau
                e_w[lo:hi].neg_().add_(weight[y0[lo:hi]].to(wd)).div_(temperature)
            grad_logp_h = e_w.mul_(valid[:, None])
        if need_w or need_b:
            ctx.save_for_backward(grad_logp_h, grad_ent_h, hidden, weight, bias, y, lse, mu)
        elif need_h:
            ctx.save_for_backward(grad_logp_h, grad_ent_h)
        ctx.temperature, ctx.chunk, ctx.vchunk, ctx.entropy_grad = temperature, chunk, vchunk, entropy_grad
        ctx.hidden_shape, ctx.hidden_dtype = hidden.shape, hidden.dtype
        logp, entropy = logp.view(labels.shape), entropy.view(labels.shape)
        if not entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logp: Tensor, grad_entropy: Tensor):
        with torch.autocast(grad_logp.device.type, enabled=False):
            return _HiddenLogprobs._backward(ctx, grad_logp, grad_entropy)

    @staticmethod
    def _backward(ctx, grad_logp: Tensor, grad_entropy: Tensor):
        grad_logp_h, grad_ent_h, *rest = ctx.saved_tensors
        g = grad_logp.reshape(-1)  # [N]
        ge = grad_entropy.reshape(-1) if ctx.entropy_grad else None  # [N]
        grad_h = grad_w = grad_b = None
        if grad_logp_h is not None:
            gh = grad_logp_h * g.to(grad_logp_h.dtype)[:, None]  # [N, H]
            if ge is not None:
                gh.addcmul_(grad_ent_h, ge.to(gh.dtype)[:, None])
            grad_h = gh.to(ctx.hidden_dtype).view(ctx.hidden_shape)
        if rest:
            grad_w, grad_b = _weight_grads(ctx, *rest, g, ge)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None, None


def _weight_grads(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor, lse: Tensor,
                  mu: Tensor, g: Tensor, ge: Tensor | None) -> tuple[Tensor | None, Tensor | None]:  # fmt: skip
    """``dL/dW = sum_t dx_t h_t^T / tau`` and ``dL/db = sum_t dx_t / tau``, recomputing each tile's ``p``."""
    need_w, need_b = ctx.needs_input_grad[1:3]
    tau, wd = ctx.temperature, lse.dtype
    mode, flat = ctx.mode, hidden.reshape(-1, hidden.shape[-1])  # [N, H]
    h = flat.to(wd) if mode == "f32" else None  # [N, H] float32 (a copy only for bf16 inputs in f32 mode)
    h_low = flat if _low(hidden, weight) else None  # [N, H] bf16
    g = torch.where(y >= 0, g.to(wd), 0.0) / tau  # [N]
    ge = None if ge is None else ge.to(wd) / tau  # [N]
    N, dev = flat.shape[0], flat.device
    tokens = _spans(N, ctx.chunk)
    x_buf, p_buf = (torch.empty(min(ctx.chunk, N) * ctx.vchunk, dtype=wd, device=dev) for _ in range(2))
    grad_w = torch.empty_like(weight) if need_w else None  # [V, H]
    grad_b = torch.empty_like(bias) if need_b else None  # [V]
    for vlo, vhi in _spans(weight.shape[0], ctx.vchunk):
        w = weight[vlo:vhi].to(wd) if mode == "f32" else None  # [v, H] float32 copy (f32 mode only)
        b = None if bias is None else bias[vlo:vhi].to(wd)
        gw = torch.zeros(vhi - vlo, flat.shape[1], dtype=wd, device=dev) if need_w else None  # [v, H]
        gb = torch.zeros(vhi - vlo, dtype=wd, device=dev) if need_b else None  # [v]
        for lo, hi in tokens:
            x = _tile(x_buf, *((h[lo:hi], w) if w is not None else (h_low[lo:hi], weight[vlo:vhi])), b, tau, mode)
            p = torch.sub(x, lse[lo:hi, None], out=p_buf[: x.numel()].view_as(x)).exp_()  # [c, v] softmax
            if ge is None:
                dx = p.mul_(-g[lo:hi, None])  # [c, v] -g p
            else:  # -g p - g' p (x - mu)
                dx = x.sub_(mu[lo:hi, None]).mul_(p).mul_(-ge[lo:hi, None]).addcmul_(p, g[lo:hi, None], value=-1)
            _add_at_labels(dx, y[lo:hi], g[lo:hi], vlo)  # + g at the label
            if gw is not None:
                _add_mm(gw, dx.T, None if h is None else h[lo:hi], None if h_low is None else h_low[lo:hi],
                        mode == "f32out")  # fmt: skip
            if gb is not None:
                gb += dx.sum(0)
        if grad_w is not None:
            grad_w[vlo:vhi] = gw
        if grad_b is not None:
            grad_b[vlo:vhi] = gb
    return grad_w, grad_b


def hidden_logprobs(
    hidden: Tensor, weight: Tensor, labels: Tensor, *, temperature: float = 1.0, bias: Tensor | None = None,
    chunk_size: int | None = None, vocab_chunk: int | None = None, with_entropy: bool = False,
    entropy_grad: bool = False, bf16_logits: bool = False,
) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """Log-probs (and entropies) of ``softmax((hidden @ weight.T + bias) / temperature)``, logits never built.

    ``logp_t = x_t[y_t] - logsumexp_k x_t[k]`` with ``x_t = (W h_t + b) / tau``, in float32 (float64 for
    float64 inputs), tile by tile; differentiable w.r.t. ``hidden``, ``weight`` and ``bias`` (whichever
    require grad: a frozen ``weight`` costs no extra pass), with a tiled custom backward.

    Args:
        hidden: ``[B, T, H]`` (any leading dims) last hidden states, after the final norm: the
            positions that predict ``labels``.
        weight: ``[V, H]`` the ``lm_head`` weight (``model.get_output_embeddings().weight``).
        labels: ``[B, T]`` token ids in ``[0, V)``; a negative id (``-100``) is ignored: log-prob 0
            and no gradient from it (its entropy is still computed).
        temperature: the sampler's temperature.
        bias: ``[V]`` the ``lm_head`` bias, if it has one.
        chunk_size: tokens per tile; None: ``CHUNK_TOKENS[device]``.
        vocab_chunk: vocabulary rows per tile; None: ``TILE_ELEMENTS[device] // max(chunk_size, H)``.
        with_entropy: also return the entropies.
        entropy_grad: let gradients flow through the entropies too (costs one more matmul per tile).
        bf16_logits: for bf16 (fp16) ``hidden`` and ``weight``, run each tile's logits matmul in that
            dtype, as ``lm_head`` does under autocast, then upcast the tile: the numerics of today's
            materialised path (~1e-2 from float64 rather than ~1e-6) at bf16 matmul speed (on CPU
            with AVX512-BF16 about 3x the float32 one). No effect on other dtypes.
    Returns:
        ``(logp, entropy)``: ``[B, T]`` float32 log-probs, and ``[B, T]`` float32 entropies (nats)
        or None without ``with_entropy``.

    >>> h, w = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    >>> hidden_logprobs(h, w, torch.tensor([[0, 1]]), temperature=2.0)[0]  # logits [0, 0] and [0, 2]
    tensor([[-0.6931, -0.3133]])
    """
    if hidden.dim() < 2 or weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden [..., H] and weight [V, H] do not fit: {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}")  # fmt: skip
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match hidden {tuple(hidden.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be [V] = [{weight.shape[0]}], got {tuple(bias.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    kind = "cpu" if hidden.device.type == "cpu" else "other"
    chunk = CHUNK_TOKENS[kind] if chunk_size is None else chunk_size
    vchunk = max(1, TILE_ELEMENTS[kind] // max(chunk, hidden.shape[-1])) if vocab_chunk is None else vocab_chunk
    if chunk < 1 or vchunk < 1:
        raise ValueError(f"chunk_size and vocab_chunk must be >= 1, got {chunk_size}, {vocab_chunk}")
    logp, entropy = _HiddenLogprobs.apply(hidden, weight, bias, labels, float(temperature), int(chunk), int(vchunk),
                                          bool(with_entropy and entropy_grad), bool(bf16_logits),
                                          torch.is_grad_enabled())  # fmt: skip
    return logp, (entropy if with_entropy else None)


__all__ = ["CHUNK_TOKENS", "TILE_ELEMENTS", "f32_products", "hidden_logprobs"]
