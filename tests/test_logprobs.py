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
