"""grpo_kit.algorithms.logprobs: chunked log-probs and entropies equal the naive ones, and so do
their gradients."""

import math

import pytest
import torch

from grpo_kit.algorithms.logprobs import CHUNK_ELEMENTS, token_entropy, token_logprobs


def naive_logprobs(logits, labels, temperature=1.0):
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    return torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)


def naive_entropy(logits, temperature=1.0):
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, -1)
    return -(logp.exp() * logp).sum(-1)


def random_case(B=3, T=7, V=11, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 3).to(dtype)
    return logits, torch.randint(0, V, (B, T), generator=gen)


# --------------------------------------------------------------------------- by hand


def test_token_logprobs_by_hand():
    # logits [0, ln 3]: softmax [1/4, 3/4]; label 1: ln(3/4) = -0.2877, label 0: ln(1/4) = -1.3863
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, math.log(3)]]])
    out = token_logprobs(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(out, torch.tensor([[math.log(0.75), math.log(0.25)]]))
    # temperature 2: logits [0, ln 3 / 2] = [0, ln sqrt 3]: p_1 = sqrt 3 / (1 + sqrt 3) = 0.6340
    out = token_logprobs(logits, torch.tensor([[1, 1]]), temperature=2.0)
    want = math.log(math.sqrt(3) / (1 + math.sqrt(3)))
    torch.testing.assert_close(out, torch.tensor([[want, want]]))


def test_token_entropy_by_hand():
    # [1/4, 3/4]: H = 0.25 ln 4 + 0.75 ln(4/3) = 0.3466 + 0.2158 = 0.5623; uniform over 5: ln 5
    logits = torch.tensor([[[0.0, math.log(3)]]])
    h = 0.25 * math.log(4) + 0.75 * math.log(4 / 3)
    torch.testing.assert_close(token_entropy(logits), torch.tensor([[h]]))
    torch.testing.assert_close(token_entropy(torch.zeros(2, 3, 5)), torch.full((2, 3), math.log(5)))
    # temperature -> large flattens towards uniform; small sharpens towards 0
    assert token_entropy(logits, temperature=100.0).item() == pytest.approx(math.log(2), abs=1e-4)
    assert token_entropy(logits * 100, temperature=0.01).item() == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- chunked == naive


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 21, 1000, None])  # 21 = B*T; 1000 > B*T
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_naive_values_and_gradients(chunk_size, temperature):
    logits, labels = random_case()
    z = logits.clone().requires_grad_()
    w = torch.randn(labels.shape, dtype=torch.float64)
    ours = token_logprobs(z, labels, temperature=temperature, chunk_size=chunk_size)
    ent = token_entropy(z, temperature=temperature, chunk_size=chunk_size)
    (g_ours,) = torch.autograd.grad((ours * w).sum() + (ent * w.flip(0)).sum(), z)
    z2 = logits.clone().requires_grad_()
    ref = naive_logprobs(z2, labels, temperature)
    ref_ent = naive_entropy(z2, temperature)
    (g_ref,) = torch.autograd.grad((ref * w).sum() + (ref_ent * w.flip(0)).sum(), z2)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(ent, ref_ent, atol=1e-12, rtol=0)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-12, rtol=0)


def test_gradcheck():
    logits, labels = random_case(B=2, T=3, V=5)
    z = logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, labels, temperature=0.5, chunk_size=2), (z,))
    assert torch.autograd.gradcheck(lambda x: token_entropy(x, temperature=0.5, chunk_size=2), (z,))


def test_bf16_logits_match_the_float32_naive_path():
    # bf16 logits are upcast chunk by chunk: same log-probs as log_softmax(logits.float()) to 1e-5;
    # the logit gradient comes back in bf16 like the naive one's, equal to bf16 rounding
    logits, labels = random_case(B=2, T=16, V=4096, dtype=torch.bfloat16)
    z = logits.clone().requires_grad_()
    ours = token_logprobs(z, labels, chunk_size=5)
    assert ours.dtype == torch.float32
    ours.sum().backward()
    z2 = logits.clone().requires_grad_()
    ref = naive_logprobs(z2, labels)
    ref.sum().backward()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert z.grad.dtype == torch.bfloat16
    torch.testing.assert_close(z.grad, z2.grad, atol=1e-2, rtol=1e-2)


def test_strided_view_of_logits_is_read_in_place():
    # the usual slice logits[:, prompt_len - 1 : -1] cannot be flattened to [B*T, V] without a copy
    full, _ = random_case(B=2, T=10, V=6)
    full.requires_grad_()
    view = full[:, 3:9]
    assert not view.is_contiguous()
    labels = torch.randint(0, 6, (2, 6))
    out = token_logprobs(view, labels, chunk_size=4)
    torch.testing.assert_close(out, naive_logprobs(view, labels))
    out.sum().backward()
    (g_ref,) = torch.autograd.grad(naive_logprobs(full[:, 3:9], labels).sum(), full)
    torch.testing.assert_close(full.grad, g_ref)


def test_no_grad_and_empty_and_leading_dims():
    logits, labels = random_case()
    with torch.no_grad():
        out = token_logprobs(logits.requires_grad_(), labels)
    assert not out.requires_grad
    assert token_logprobs(torch.zeros(0, 4, 7), torch.zeros(0, 4, dtype=torch.long)).shape == (0, 4)
    flat = token_logprobs(logits.detach().view(-1, 11), labels.view(-1))  # [N, V] works too
    torch.testing.assert_close(flat.view(3, 7), naive_logprobs(logits.detach(), labels))


def test_default_chunk_size_bounds_the_float32_scratch():
    # on CPU the default chunk is CHUNK_ELEMENTS["cpu"] // V rows: at V = 151,936, 55 rows (32 MiB)
    assert CHUNK_ELEMENTS["cpu"] // 151_936 == 55
    # a vocabulary larger than the budget still works (one row per chunk); float64 reference
    logits, labels = random_case(B=1, T=3, V=CHUNK_ELEMENTS["cpu"] + 1, dtype=torch.bfloat16)
    ref = naive_logprobs(logits.double(), labels).float()
    torch.testing.assert_close(token_logprobs(logits, labels), ref, atol=0, rtol=1e-5)


def test_validates():
    logits, labels = random_case()
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(logits, labels, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        token_entropy(logits, chunk_size=0)
    with pytest.raises(ValueError, match="do not match"):
        token_logprobs(logits, labels[:, :-1])


# --------------------------------------------------------------------------- from hidden states

from grpo_kit.algorithms import hidden_logprobs  # noqa: E402  (exported with token_logprobs)
from grpo_kit.algorithms.fused import TILE_ELEMENTS  # noqa: E402


def naive_hidden(hidden, weight, labels, temperature=1.0, bias=None):
    """float64-style reference: build the logits, then log_softmax (and the entropy)."""
    z = hidden @ weight.T + (0 if bias is None else bias)  # [B, T, V]
    logp = torch.log_softmax(z / temperature, -1)
    return logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def hidden_case(B=3, T=7, H=5, V=13, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    h, w, b = r(B, T, H), r(V, H) * 1.5, r(V)
    return h.to(dtype), w.to(dtype), b.to(dtype), torch.randint(0, V, (B, T), generator=gen)


def leaves(*xs, grad=True):
    return [x.detach().clone().requires_grad_(grad) for x in xs]


@pytest.mark.parametrize(("chunk_size", "vocab_chunk"), [(1, 1), (4, 5), (21, 13), (8, 100), (None, None)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("with_bias", [False, True])
def test_hidden_matches_naive_values_and_gradients(chunk_size, vocab_chunk, temperature, with_bias):
    # 21 tokens and V = 13: chunks of 4 tokens and 5 rows leave a ragged last tile on both axes
    h0, w0, b0, labels = hidden_case()
    g, g_ent = torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    h, w, b = leaves(h0, w0, b0)
    logp, ent = hidden_logprobs(h, w, labels, temperature=temperature, bias=b if with_bias else None,
                                chunk_size=chunk_size, vocab_chunk=vocab_chunk, with_entropy=True,
                                entropy_grad=True)  # fmt: skip
    ours = torch.autograd.grad((logp * g).sum() + (ent * g_ent).sum(), [h, w, b] if with_bias else [h, w])
    h2, w2, b2 = leaves(h0, w0, b0)
    ref, ref_ent = naive_hidden(h2, w2, labels, temperature, b2 if with_bias else None)
    refs = torch.autograd.grad((ref * g).sum() + (ref_ent * g_ent).sum(), [h2, w2, b2] if with_bias else [h2, w2])
    torch.testing.assert_close(logp, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(ent, ref_ent, atol=1e-12, rtol=0)
    for got, want in zip(ours, refs):  # d/dhidden, d/dweight (, d/dbias)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_hidden_equals_token_logprobs_on_the_logits():
    # the fused path and the logits path are the same function of the same numbers
    h, w, b, labels = hidden_case(T=9, V=17)
    ours, _ = hidden_logprobs(h, w, labels, temperature=0.6, bias=b, chunk_size=5, vocab_chunk=6)
    torch.testing.assert_close(ours, token_logprobs(h @ w.T + b, labels, temperature=0.6), atol=1e-12, rtol=0)


def test_hidden_entropy_grad_switch():
    # off: the entropy is a constant for autograd and the gradient is the log-probs' alone;
    # on: it adds exactly the entropy's gradient
    h0, w0, _, labels = hidden_case()
    h, w = leaves(h0, w0)
    logp, ent = hidden_logprobs(h, w, labels, chunk_size=4, vocab_chunk=5, with_entropy=True)
    assert not ent.requires_grad
    off = torch.autograd.grad(logp.sum(), [h, w])
    h, w = leaves(h0, w0)
    logp, ent = hidden_logprobs(h, w, labels, chunk_size=4, vocab_chunk=5, with_entropy=True, entropy_grad=True)
    on = torch.autograd.grad(logp.sum() + ent.sum(), [h, w])
    h2, w2 = leaves(h0, w0)
    ref, ref_ent = naive_hidden(h2, w2, labels)
    want_off = torch.autograd.grad(ref.sum(), [h2, w2], retain_graph=True)
    want_ent = torch.autograd.grad(ref_ent.sum(), [h2, w2])
    for got_off, got_on, w_off, w_ent in zip(off, on, want_off, want_ent):
        torch.testing.assert_close(got_off, w_off, atol=1e-12, rtol=0)
        torch.testing.assert_close(got_on - got_off, w_ent, atol=1e-12, rtol=0)
    assert hidden_logprobs(h0, w0, labels)[1] is None  # with_entropy=False: no entropy


def test_hidden_frozen_weight_gets_no_gradient_and_is_not_saved():
    # LoRA: lm_head frozen (requires_grad False): d/dhidden is still exact, the weight gets no grad,
    # and what the forward saves for backward is [N, H]-sized (no weight, no [N, V] tile)
    h0, w0, b0, labels = hidden_case(V=40)
    h, = leaves(h0)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        logp, _ = hidden_logprobs(h, w0, labels, temperature=0.8, bias=b0, chunk_size=4, vocab_chunk=7)
    logp.sum().backward()
    assert w0.grad is None and b0.grad is None
    assert 0 < sum(saved) <= h0.numel(), saved
    h2, = leaves(h0)
    naive_hidden(h2, w0, labels, 0.8, b0)[0].sum().backward()
    torch.testing.assert_close(h.grad, h2.grad, atol=1e-12, rtol=0)
    # a trainable bias alone (weight frozen) is exact too
    b, = leaves(b0)
    (gb,) = torch.autograd.grad(hidden_logprobs(h0, w0, labels, bias=b, chunk_size=4, vocab_chunk=7)[0].sum(), b)
    b2, = leaves(b0)
    (want,) = torch.autograd.grad(naive_hidden(h0, w0, labels, bias=b2)[0].sum(), b2)
    torch.testing.assert_close(gb, want, atol=1e-12, rtol=0)


def test_hidden_no_grad_saves_nothing():
    h, w, b = leaves(*hidden_case()[:3])
    labels = hidden_case()[3]
    saved = []
    with torch.no_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        logp, ent = hidden_logprobs(h, w, labels, bias=b, with_entropy=True, entropy_grad=True)
    assert saved == [] and not logp.requires_grad and not ent.requires_grad
    torch.testing.assert_close(logp, naive_hidden(h.detach(), w.detach(), labels, bias=b.detach())[0])


def test_hidden_ignores_negative_labels():
    # -100 at padding: log-prob 0 and no gradient from those tokens; the others are untouched
    h0, w0, _, labels = hidden_case()
    labels = labels.clone()
    labels[0, 4:] = -100
    labels[2, 0] = -1
    keep = labels >= 0
    h, w = leaves(h0, w0)
    logp, _ = hidden_logprobs(h, w, labels, chunk_size=4, vocab_chunk=5)
    assert (logp[~keep] == 0).all()
    logp.sum().backward()
    h2, w2 = leaves(h0, w0)
    ref = naive_hidden(h2, w2, labels)[0]
    torch.testing.assert_close(logp[keep], ref[keep], atol=1e-12, rtol=0)
    (ref * keep).sum().backward()
    torch.testing.assert_close(h.grad, h2.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(w.grad, w2.grad, atol=1e-12, rtol=0)
    assert h.grad[0, 4:].abs().max() == 0


def test_hidden_gradcheck():
    h, w, b, labels = hidden_case(B=2, T=3, H=3, V=5)
    h, w, b = leaves(h, w, b)

    def f(h, w, b):
        return hidden_logprobs(h, w, labels, temperature=0.5, bias=b, chunk_size=2, vocab_chunk=2,
                               with_entropy=True, entropy_grad=True)  # fmt: skip

    assert torch.autograd.gradcheck(f, (h, w, b))


def test_hidden_bf16_inputs_against_float64():
    # bf16 hidden and weight (the model's dtypes): float32 tiles give the float64 log-probs of the
    # same bf16 numbers to 2e-6 (building bf16 logits first is off by ~1e-2); the gradients come
    # back in bf16, equal to the float64 ones to bf16 rounding. Logits of std ~3, log-probs ~-10:
    # at |logp| > 32 the float32 result alone is 2e-6 coarse.
    h0, w0, _, labels = hidden_case(B=2, T=40, H=64, V=3000, dtype=torch.bfloat16, seed=1)
    w0 = (w0.float() * 0.25).bfloat16()
    h, w = leaves(h0, w0)
    logp, ent = hidden_logprobs(h, w, labels, temperature=0.9, chunk_size=33, vocab_chunk=700, with_entropy=True)
    assert logp.dtype == ent.dtype == torch.float32
    logp.sum().backward()
    assert h.grad.dtype == w.grad.dtype == torch.bfloat16
    h2, w2 = leaves(h0.double(), w0.double())
    ref, ref_ent = naive_hidden(h2, w2, labels, 0.9)
    ref.sum().backward()
    torch.testing.assert_close(logp.double(), ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(ent.double(), ref_ent, atol=2e-6, rtol=0)
    assert (naive_logprobs(h0 @ w0.T, labels, 0.9).double() - ref).abs().max() > 1e-3  # what we avoid
    torch.testing.assert_close(h.grad.double(), h2.grad, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(w.grad.double(), w2.grad, atol=1e-2, rtol=1e-2)


def test_hidden_bf16_logits_switch():
    # bf16_logits=True: the tile matmul runs in bf16 like lm_head under autocast, so the log-probs
    # are those of the materialised bf16 logits (not of float64), and so are the gradients
    h0, w0, _, labels = hidden_case(B=2, T=40, H=64, V=3000, dtype=torch.bfloat16, seed=1)
    w0 = (w0.float() * 0.25).bfloat16()
    h, w = leaves(h0, w0)
    fast, _ = hidden_logprobs(h, w, labels, temperature=0.9, chunk_size=33, vocab_chunk=700, bf16_logits=True)
    fast.sum().backward()
    h2, w2 = leaves(h0, w0)
    today = token_logprobs(h2 @ w2.T, labels, temperature=0.9)  # materialised bf16 logits
    today.sum().backward()
    exact, _ = hidden_logprobs(h0, w0, labels, temperature=0.9, chunk_size=33, vocab_chunk=700)
    torch.testing.assert_close(fast, today, atol=1e-5, rtol=0)
    assert (fast - exact).abs().max() > 1e-3  # the switch changes the numerics by bf16 rounding
    torch.testing.assert_close(h.grad, h2.grad, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(w.grad, w2.grad, atol=1e-2, rtol=1e-2)
    h32, w32 = h0.float(), w0.float()  # no effect on float32 inputs
    torch.testing.assert_close(hidden_logprobs(h32, w32, labels, bf16_logits=True)[0],
                               hidden_logprobs(h32, w32, labels)[0], atol=0, rtol=0)  # fmt: skip


def test_hidden_float32_products_path_through_its_cpu_twin(monkeypatch):
    # Where torch.mm multiplies bf16 operands into float32 (CUDA: out_dtype=torch.float32) the tiles
    # take the bf16 h and W as they are. CPU has no such op (torch 2.13), so the op is replaced by
    # its CPU twin, the upcast product (the same numbers): the path then gives the float32 tiles'
    # log-probs (to 2e-6 of float64) and gradients, never upcasts a block of W, and every product
    # goes through the op. Without the op on this device the probe says so and the upcast path runs.
    import grpo_kit.algorithms.fused as fused

    assert fused.f32_products("meta") is False  # no numbers to check on meta: refused, not assumed
    calls = []

    def twin(a, b, out=None):
        assert a.dtype == b.dtype == torch.bfloat16  # bf16 operands, as cuBLAS would take them
        calls.append(a.shape[0] * b.shape[1])
        return torch.mm(a.float(), b.float(), out=out)

    h0, w0, _, labels = hidden_case(B=2, T=40, H=64, V=3000, dtype=torch.bfloat16, seed=1)
    w0 = (w0.float() * 0.25).bfloat16()
    h, w = leaves(h0, w0)
    base, base_ent = hidden_logprobs(h, w, labels, temperature=0.9, chunk_size=33, vocab_chunk=700,
                                     with_entropy=True, entropy_grad=True)  # fmt: skip
    (base.sum() + base_ent.sum()).backward()
    want_h, want_w = h.grad, w.grad
    assert calls == []  # the upcast path: the op is not used

    monkeypatch.setattr(fused, "_mm_f32", twin)
    monkeypatch.setitem(fused._F32_PRODUCTS, ("cpu", torch.bfloat16), True)
    upcasts = []
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: upcasts.append(t.shape) or real_to(t, *a, **k))
    h, w = leaves(h0, w0)
    logp, ent = hidden_logprobs(h, w, labels, temperature=0.9, chunk_size=33, vocab_chunk=700,
                                with_entropy=True, entropy_grad=True)  # fmt: skip
    (logp.sum() + ent.sum()).backward()
    monkeypatch.undo()
    assert not [s for s in upcasts if tuple(s) == (700, 64)]  # no float32 block of W
    # forward: 3 token chunks x 5 vocabulary blocks x (tile, E_p[W], E_p[x W]); backward: (tile, dW)
    assert len(calls) == 15 * 3 + 15 * 2, len(calls)
    torch.testing.assert_close(logp, base, atol=1e-6, rtol=0)
    torch.testing.assert_close(ent, base_ent, atol=1e-6, rtol=0)
    h2, w2 = leaves(h0.double(), w0.double())
    ref, ref_ent = naive_hidden(h2, w2, labels, 0.9)
    (ref.sum() + ref_ent.sum()).backward()
    torch.testing.assert_close(logp.double(), ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(ent.double(), ref_ent, atol=2e-6, rtol=0)
    torch.testing.assert_close(h.grad.float(), want_h.float(), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(w.grad.float(), want_w.float(), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(h.grad.double(), h2.grad, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(w.grad.double(), w2.grad, atol=1e-2, rtol=1e-2)


def test_hidden_inside_autocast_keeps_float32_tiles():
    # forward_logprobs runs the model under torch.autocast(bf16): the tiles' matmuls must not be
    # autocast to bf16 (that alone is ~2e-2 off at V = 3000)
    h0, w0, _, labels = hidden_case(B=2, T=8, H=64, V=3000, dtype=torch.float32)
    w0 = w0 * 0.25
    h, w = leaves(h0, w0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, _ = hidden_logprobs(h, w, labels, chunk_size=5, vocab_chunk=700)
        (logp * 1.0).sum().backward()
    h2, w2 = leaves(h0.double(), w0.double())
    ref = naive_hidden(h2, w2, labels)[0]
    ref.sum().backward()
    torch.testing.assert_close(logp.double(), ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(h.grad.double(), h2.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(w.grad.double(), w2.grad, atol=1e-5, rtol=0)


def test_hidden_strided_leading_dims_and_empty():
    # the usual slice hidden[:, P-1 : -1] (not contiguous), [N, H] inputs, and no tokens at all
    h0, w0, _, _ = hidden_case(T=10)
    view = h0[:, 3:9]
    labels = torch.randint(0, 13, (3, 6))
    want = naive_hidden(view, w0, labels)[0]
    torch.testing.assert_close(hidden_logprobs(view, w0, labels, chunk_size=4)[0], want)
    flat, _ = hidden_logprobs(view.reshape(-1, 5), w0, labels.reshape(-1), chunk_size=4)
    torch.testing.assert_close(flat.view(3, 6), want)
    h, w = leaves(torch.zeros(0, 4, 5, dtype=torch.float64), w0)
    logp, ent = hidden_logprobs(h, w, torch.zeros(0, 4, dtype=torch.long), with_entropy=True)
    assert logp.shape == ent.shape == (0, 4)
    logp.sum().backward()
    assert h.grad.shape == h.shape and (w.grad == 0).all()


def test_hidden_default_tile_fits_the_budget():
    # CPU default: 1024 tokens x TILE_ELEMENTS // max(1024, H) vocab rows; at H = 1536: 2730 rows,
    # so both the [1024, 2730] tile and the float32 [2730, 1536] block of W are <= 16 MiB
    assert TILE_ELEMENTS["cpu"] // 1536 == 2730 and 2730 * 1536 * 4 <= 16 * 2**20


def test_hidden_validates():
    h, w, b, labels = hidden_case()
    with pytest.raises(ValueError, match="temperature"):
        hidden_logprobs(h, w, labels, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        hidden_logprobs(h, w, labels, vocab_chunk=0)
    with pytest.raises(ValueError, match="do not match"):
        hidden_logprobs(h, w, labels[:, :-1])
    with pytest.raises(ValueError, match="do not fit"):
        hidden_logprobs(h, w[:, :-1], labels)
    with pytest.raises(ValueError, match="bias"):
        hidden_logprobs(h, w, labels, bias=b[:-1])
