"""grpo_kit.algorithms.losses: hand-computed cases, the policy gradient, accumulation invariance."""

import math

import pytest
import torch

from grpo_kit.algorithms.logprobs import token_logprobs
from grpo_kit.algorithms.losses import (
    AGGREGATIONS,
    AdaptiveKLController,
    FixedKLController,
    aggregate,
    entropy_loss,
    kl_in_reward,
    kl_penalty,
    policy_loss,
    truncated_is_weights,
    value_loss,
)

T = torch.tensor
LN = math.log


def close(a, b, atol=1e-6):
    b = b if isinstance(b, torch.Tensor) else T(b, dtype=a.dtype)
    torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=0)


# --------------------------------------------------------------------------- aggregate

L = T([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [7.0, 7.0, 7.0]])
M = T([[1, 1, 1], [1, 0, 0], [0, 0, 0]])  # the last row is empty


@pytest.mark.parametrize(
    "agg, kwargs, expected",
    [
        ("token_mean", {}, 10 / 4),  # (1+2+3+4) / 4 tokens
        ("token_mean", {"num_tokens": 8}, 10 / 8),  # a global token count
        ("seq_mean_token_mean", {}, (6 / 3 + 4 / 1 + 0) / 3),  # per-sequence means over 3 rows
        ("seq_mean_token_mean", {"num_seqs": 6}, (2 + 4) / 6),
        ("seq_mean_token_sum", {}, (6 + 4 + 0) / 3),
        ("constant_norm", {"max_len": 5}, 10 / (3 * 5)),  # sum / (B * max_len)
        ("constant_norm", {"max_len": 5, "num_seqs": 4}, 10 / (4 * 5)),
    ],
)
def test_aggregate_by_hand(agg, kwargs, expected):
    close(aggregate(L, M, agg, **kwargs), expected)


def test_aggregate_validates_and_handles_empty_masks():
    with pytest.raises(ValueError, match="max_len"):
        aggregate(L, M, "constant_norm")
    with pytest.raises(ValueError, match="agg"):
        aggregate(L, M, "mean")
    for agg in AGGREGATIONS:
        out = aggregate(L, torch.zeros(3, 3), agg, max_len=3)
        assert out == 0 and not out.isnan()


# --------------------------------------------------------------------------- policy_loss by hand


def one_token_loss(ratio, adv, **kwargs):
    logp = T([[LN(ratio)]], dtype=torch.float64)
    loss, metrics = policy_loss(logp, torch.zeros(1, 1, dtype=torch.float64), T([adv], dtype=torch.float64),
                                torch.ones(1, 1), **kwargs)  # fmt: skip
    return loss.item(), {k: v.item() for k, v in metrics.items()}


@pytest.mark.parametrize(
    "ratio, adv, kwargs, expected",
    [
        (1.0, 2.0, {}, -2.0),  # on-policy: -A r = -2
        (1.5, 1.0, {}, -1.2),  # A > 0, r > 1 + 0.2: clipped to -A * 1.2
        (1.1, 1.0, {}, -1.1),  # inside the range: -A r
        (1.25, 1.0, {"clip_high": 0.28}, -1.25),  # clip-higher (DAPO): 1.25 < 1.28 is not clipped
        (0.5, 1.0, {}, -0.5),  # A > 0, r < 1 - 0.2: max(-0.5, -0.8) = -0.5 (no clip below for A > 0)
        (0.5, -1.0, {}, 0.8),  # A < 0, r < 0.8: max(0.5, 0.8) = 0.8, clipped
        (1.5, -1.0, {}, 1.5),  # A < 0, r > 1.2: max(1.5, 1.2) = 1.5, unbounded ...
        (1.5, -1.0, {"dual_clip": 1.4}, 1.4),  # ... unless dual clip caps it at -A c = 1.4
        (1.3, -1.0, {"dual_clip": 1.4}, 1.3),  # below the cap
        (1.5, 2.0, {"dual_clip": 1.4}, -2.4),  # dual clip leaves A > 0 alone: -2 * 1.2
    ],
)
def test_policy_loss_one_token(ratio, adv, kwargs, expected):
    loss, _ = one_token_loss(ratio, adv, **kwargs)
    assert loss == pytest.approx(expected)


def test_policy_loss_metrics_by_hand():
    # 4 tokens of one sequence with A = +1, -1, +1, -1 and ratios 1.5, 0.5, 1.0, 2.0, 5th masked
    ratios = T([[1.5, 0.5, 1.0, 2.0, 9.0]], dtype=torch.float64)
    adv = T([[1.0, -1.0, 1.0, -1.0, 1.0]], dtype=torch.float64)
    mask = T([[1, 1, 1, 1, 0]])
    _, m = policy_loss(ratios.log(), torch.zeros_like(ratios), adv, mask, dual_clip=1.8)
    assert m["clip_frac_high"].item() == pytest.approx(1 / 4)  # token 0: A > 0, r = 1.5 > 1.2
    assert m["clip_frac_low"].item() == pytest.approx(1 / 4)  # token 1: A < 0, r = 0.5 < 0.8
    assert m["dual_clip_frac"].item() == pytest.approx(1 / 4)  # token 3: A < 0, r = 2 > 1.8
    assert m["ratio_mean"].item() == pytest.approx(5.0 / 4)  # (1.5 + .5 + 1 + 2) / 4
    assert (m["ratio_min"].item(), m["ratio_max"].item()) == (0.5, 2.0)
    # k3 of KL(old || new): mean of r - 1 - log r
    k3 = sum(r - 1 - math.log(r) for r in (1.5, 0.5, 1.0, 2.0)) / 4
    assert m["approx_kl"].item() == pytest.approx(k3)
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())


def test_policy_loss_empty_mask_gives_zero_not_nan():
    logp = torch.randn(2, 3, requires_grad=True)
    loss, metrics = policy_loss(logp, torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 3))
    assert loss.item() == 0.0
    assert not any(v.isnan() for v in metrics.values())
    loss.backward()
    assert (logp.grad == 0).all()


def test_policy_loss_is_weights_and_truncated_is_weights():
    # weights min(exp(trainer - sampler), cap): exp(0 - (-1)) = e -> capped 2; exp(-1 - 0) = 0.3679
    w = truncated_is_weights(T([[0.0, -1.0]]), T([[-1.0, 0.0]]), cap=2.0)
    close(w, [[2.0, math.exp(-1)]])
    # on-policy, A = 1: per-token loss -1, weighted [-2, -0.3679], token mean
    loss, _ = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), T([1.0]), torch.ones(1, 2), is_weights=w)
    close(loss, -(2.0 + math.exp(-1)) / 2)
    assert not truncated_is_weights(torch.zeros(1, 1, requires_grad=True), torch.zeros(1, 1)).requires_grad


def test_policy_loss_validates():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(x, x, T([1.0]), x, dual_clip=0.9)
    with pytest.raises(ValueError, match="ratio_level"):
        policy_loss(x, x, T([1.0]), x, ratio_level="token_mean")
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        policy_loss(x, torch.zeros(1, 3), T([1.0]), x)


def test_policy_loss_extreme_log_ratio_is_finite():
    loss, m = policy_loss(T([[500.0, -500.0]]), torch.zeros(1, 2), T([-1.0]), torch.ones(1, 2))
    assert loss.isfinite() and all(v.isfinite() for v in m.values())


# --------------------------------------------------------------------------- gradients


def test_grpo_gradient_matches_analytic_expression():
    # GRPO loss, seq_mean_token_mean: L = (1/B) sum_b (1/|y_b|) sum_t l_bt, with
    # l = -A r where r = exp(logp - old) is inside the clip range (or clipping would not bind), and
    # a constant otherwise. So dL/dlogp_bt = -(1/B)(1/|y_b|) A_b r_bt * [not clipped].
    logp = T([[-0.5, -2.0, -0.5], [-0.3, -1.2, 0.0]], dtype=torch.float64, requires_grad=True)
    old = T([[-1.1, -1.0, -0.5], [-0.3, -1.0, 0.0]], dtype=torch.float64)
    adv = T([0.7, -1.3], dtype=torch.float64)
    mask = T([[1, 1, 1], [1, 1, 0]])
    loss, _ = policy_loss(logp, old, adv, mask, agg="seq_mean_token_mean")
    loss.backward()
    r = (logp - old).exp().detach()
    # (0,0): r = e^0.6 = 1.82 > 1.2 with A > 0: clipped, no gradient; (0,1): r = e^-1 = 0.37 < 0.8
    # with A > 0: not clipped (PPO only clips the side that would raise the objective)
    clipped = ((adv[:, None] > 0) & (r > 1.2)) | ((adv[:, None] < 0) & (r < 0.8))
    assert clipped.tolist() == [[True, False, False], [False, False, False]]
    lengths = mask.sum(-1, keepdim=True)
    want = -(adv[:, None] * r / (lengths * 2)) * mask * ~clipped
    torch.testing.assert_close(logp.grad, want)


def test_on_policy_gradient_is_reinforce_through_the_logits():
    # On-policy (old = logp), the GRPO gradient w.r.t. logits z of a softmax policy is the
    # REINFORCE expression: dL/dz_bt = -(1/B)(1/|y_b|) A_b (onehot(y_bt) - softmax(z_bt)).
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (2, 3), generator=gen)
    adv, mask = T([1.5, -0.5], dtype=torch.float64), T([[1, 1, 1], [1, 1, 0]])
    logp = token_logprobs(z, y)
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, agg="seq_mean_token_mean")
    loss.backward()
    onehot = torch.nn.functional.one_hot(y, 5).double()
    coef = -(adv[:, None] / (mask.sum(-1, keepdim=True) * 2)) * mask  # [B, T]
    torch.testing.assert_close(z.grad, coef[..., None] * (onehot - z.detach().softmax(-1)))


def test_gspo_ratio_and_gradient_match_the_sequence_formula():
    # GSPO: s_b = exp(mean_t (logp - old)); L = (1/B) sum_b max(-A s_b, -A clip(s_b)).
    gen = torch.Generator().manual_seed(3)
    logp = (torch.randn(3, 4, generator=gen, dtype=torch.float64) * 0.1).requires_grad_()
    old = torch.randn(3, 4, generator=gen, dtype=torch.float64) * 0.1
    adv = T([1.0, -2.0, 0.5], dtype=torch.float64)
    mask = T([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    kw = {"clip_low": 0.03, "clip_high": 0.04}
    loss, m = policy_loss(logp, old, adv, mask, ratio_level="sequence", agg="seq_mean_token_mean", **kw)
    (g_ours,) = torch.autograd.grad(loss, logp)
    s = (((logp - old) * mask).sum(-1) / mask.sum(-1)).exp()  # [B]
    want = torch.maximum(-adv * s, -adv * s.clamp(1 - 0.03, 1 + 0.04)).mean()
    (g_want,) = torch.autograd.grad(want, logp)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(g_ours, g_want)
    assert m["ratio_min"] == s.min().detach() and m["ratio_max"] == s.max().detach()


# --------------------------------------------------------------------------- accumulation invariance


def random_batch(B=8, T_=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = T([6, 1, 3, 0, 5, 2, 6, 4])  # one empty row
    mask = (torch.arange(T_)[None] < lengths[:, None]).long()
    old = torch.randn(B, T_, generator=gen, dtype=torch.float64) * 0.3 - 1
    logp = old + torch.randn(B, T_, generator=gen, dtype=torch.float64) * 0.3
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    return logp, old, adv, mask


@pytest.mark.parametrize("agg", AGGREGATIONS)
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
def test_one_batch_of_8_equals_8_accumulated_batches_of_1(agg, ratio_level):
    logp, old, adv, mask = random_batch()
    kw = {"agg": agg, "max_len": 6, "ratio_level": ratio_level, "dual_clip": 3.0, "clip_high": 0.28}
    full = logp.clone().requires_grad_()
    loss, _ = policy_loss(full, old, adv, mask, **kw)
    loss.backward()
    # micro-batches of one sequence, given the step's normalisers; their losses are summed
    micro = logp.clone().requires_grad_()
    num_tokens, num_seqs = mask.sum(), mask.shape[0]
    total = 0.0
    for i in range(8):
        s = slice(i, i + 1)
        part, _ = policy_loss(micro[s], old[s], adv[s], mask[s], num_tokens=num_tokens, num_seqs=num_seqs, **kw)
        part.backward()
        total = total + part.detach()
    torch.testing.assert_close(total, loss.detach())
    torch.testing.assert_close(micro.grad, full.grad)


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_value_and_entropy_losses_accumulate_too(agg):
    logp, old, _, mask = random_batch(seed=1)
    returns = torch.randn(8, 6, dtype=torch.float64)
    kw = {"agg": agg, "max_len": 6}
    full = logp.clone().requires_grad_()
    (value_loss(full, old, returns, mask, **kw)[0] + entropy_loss(full, mask, **kw)).backward()
    micro = logp.clone().requires_grad_()
    norm = {"num_tokens": mask.sum(), "num_seqs": 8}
    for i in range(8):
        s = slice(i, i + 1)
        (value_loss(micro[s], old[s], returns[s], mask[s], **kw, **norm)[0]
         + entropy_loss(micro[s], mask[s], **kw, **norm)).backward()  # fmt: skip
    torch.testing.assert_close(micro.grad, full.grad)


# --------------------------------------------------------------------------- KL


@pytest.mark.parametrize(
    "d, k1, k2, k3",
    [
        (0.0, 0.0, 0.0, 0.0),  # same policy: every estimator is 0
        (1.0, 1.0, 0.5, math.exp(-1) + 1 - 1),  # k3 = exp(-d) + d - 1 = 0.3679
        (-1.0, -1.0, 0.5, math.exp(1) - 1 - 1),  # = 0.7183
        (2.0, 2.0, 2.0, math.exp(-2) + 2 - 1),  # = 1.1353
    ],
)
def test_kl_penalty_by_hand(d, k1, k2, k3):
    logp, ref = T([[d - 0.5]], dtype=torch.float64), T([[-0.5]], dtype=torch.float64)
    for name, want in (("k1", k1), ("k2", k2), ("k3", k3)):
        assert kl_penalty(logp, ref, name).item() == pytest.approx(want), name


def test_kl_penalty_clamps_and_validates():
    out = kl_penalty(T([[-1000.0, 1000.0]]), T([[0.0, 0.0]]), "k3")  # exp(1000) would overflow
    assert out.isfinite().all()
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(T([[0.0]]), T([[0.0]]), "k4")


def test_k3_is_unbiased_for_kl():
    # E_{y~p}[k3] = KL(p || q) for p, q over 3 outcomes, computed exactly as a weighted sum
    p, q = T([0.5, 0.3, 0.2], dtype=torch.float64), T([0.2, 0.2, 0.6], dtype=torch.float64)
    k3 = kl_penalty(p.log()[None], q.log()[None], "k3")[0]
    assert (p * k3).sum().item() == pytest.approx((p * (p / q).log()).sum().item())


def test_kl_in_reward():
    # r - beta * kl: [0 - 0.1*2, 1 - 0.1*0]; the KL is detached
    kl = T([[2.0, 0.0]], requires_grad=True)
    out = kl_in_reward(T([[0.0, 1.0]]), kl, 0.1)
    close(out, [[-0.2, 1.0]])
    assert not out.requires_grad


def test_kl_controllers():
    # Ziegler et al.: e = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + e * n_steps / horizon
    c = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    assert c.update(3.0, n_steps=100) == pytest.approx(0.1 * (1 - 0.2 * 0.1))  # e = -0.5 -> -0.2
    assert c.update(6.6, n_steps=100) == pytest.approx(0.098 * (1 + 0.1 * 0.1))  # e = 0.1
    f = FixedKLController(0.05)
    assert f.update(100.0, n_steps=10) == 0.05 and f.beta == 0.05
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=10)


# --------------------------------------------------------------------------- value and entropy


@pytest.mark.parametrize(
    "v, v_old, ret, clip, expected",
    [
        (1.0, 0.0, 2.0, 0.2, 0.5 * 1.8**2),  # clipped V = 0.2 is farther: 0.5 * max(1, 3.24)
        (1.0, 0.9, 2.0, 0.2, 0.5 * 1.0),  # |V - V_old| = 0.1 < 0.2: plain 0.5 (V - R)^2
        (3.0, 0.0, 2.0, 0.2, 0.5 * 1.8**2),  # V overshoots, clipped V = 0.2: max(1, 3.24)
        (1.0, 0.0, 2.0, None, 0.5 * 1.0),  # no clipping
    ],
)
def test_value_loss_by_hand(v, v_old, ret, clip, expected):
    loss, m = value_loss(T([[v, 9.0]]), T([[v_old, 0.0]]), T([[ret, 0.0]]), T([[1, 0]]), clip=clip)
    assert loss.item() == pytest.approx(expected)
    assert m["value_mse"].item() == pytest.approx((v - ret) ** 2)
    assert m["value_clip_frac"].item() == (1.0 if 0.5 * (v - ret) ** 2 < expected else 0.0)


def test_entropy_loss_by_hand():
    # entropies [1, 3] and [5] (9 masked): token mean -(1 + 3 + 5) / 3; seq mean -((1+3)/2 + 5) / 2
    h, mask = T([[1.0, 3.0], [5.0, 9.0]]), T([[1, 1], [1, 0]])
    close(entropy_loss(h, mask), -3.0)
    close(entropy_loss(h, mask, agg="seq_mean_token_mean"), -3.5)


# --------------------------------------------------------------------------- rollout correction

_T = torch.tensor
# two sequences, log rho = trainer - sampler per token; the last token of row 1 is padding
_TRAINER = _T([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
_SAMPLER = _T([[-0.5, -0.5, 0.0], [1.0, -1.0, 9.0]])  # rho: [e^.5, e^.5, 1], [e^-1, e^1, (pad)]
_MASK = _T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
E = math.e


@pytest.mark.parametrize("kwargs, weights", [
    ({}, None),  # every switch off: no weights
    ({"tis_cap": 2.0}, [[E**.5, E**.5, 1.0], [E**-1, 2.0, 1.0]]),  # min(rho_t, 2); e^1 capped
    ({"tis_cap": 10.0, "tis_level": "sequence"}, [[E**1.0] * 3, [1.0] * 3]),  # prod rho: e^(0.5+0.5), e^(-1+1)
    ({"tis_cap": 2.0, "tis_level": "sequence"}, [[2.0] * 3, [1.0] * 3]),  # e^1 capped at 2
    ({"seq_mask_band": (0.5, 1.3)}, [[0.0] * 3, [1.0] * 3]),  # geometric means e^(1/3) = 1.40 (out), e^0 (in)
    ({"token_mask_band": (0.5, 2.0)}, [[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]]),  # e^-1 = 0.37 and e^1 = 2.72 out
    ({"tis_cap": 2.0, "token_mask_band": (0.5, 2.0)}, [[E**.5, E**.5, 1.0], [0.0, 0.0, 1.0]]),  # product
])
def test_rollout_correction_weights_by_hand(kwargs, weights):
    from grpo_kit.algorithms.losses import rollout_correction

    w, _ = rollout_correction(_TRAINER, _SAMPLER, _MASK, **kwargs)
    if weights is None:
        assert w is None
    else:
        torch.testing.assert_close(w * _MASK, _T(weights) * _MASK)


def test_rollout_correction_metrics_by_hand():
    from grpo_kit.algorithms.losses import rollout_correction

    _, m = rollout_correction(_TRAINER, _SAMPLER, _MASK, token_mask_band=(0.5, 2.0))
    rho = [E**.5, E**.5, 1.0, E**-1, E]  # the 5 unmasked tokens
    k3 = sum(r - 1 - math.log(r) for r in rho) / 5
    assert float(m["kl_sampler_trainer"]) == pytest.approx(k3)
    assert float(m["masked_frac"]) == pytest.approx(2 / 5)
    assert float(m["is_weight_mean"]) == pytest.approx(3 / 5) and float(m["is_weight_max"]) == 1.0
    _, off = rollout_correction(_TRAINER, _TRAINER, _MASK)  # no mismatch: KL 0
    assert float(off["kl_sampler_trainer"]) == 0 and float(off["masked_frac"]) == 0


def test_rollout_correction_weights_scale_the_policy_gradient():
    """The weights multiply each token's loss: the gradient of a masked token is 0, of a token of
    weight w, w times the unweighted one."""
    from grpo_kit.algorithms.losses import policy_loss, rollout_correction

    w, _ = rollout_correction(_TRAINER, _SAMPLER, _MASK, tis_cap=2.0, token_mask_band=(0.5, 2.0))
    grads = []
    for weights in (None, w):
        logp = _TRAINER.clone().requires_grad_()
        loss, _ = policy_loss(logp, _TRAINER, _T([1.0, 1.0]), _MASK, is_weights=weights, num_tokens=5.0)
        loss.backward()
        grads.append(logp.grad)
    torch.testing.assert_close(grads[1], grads[0] * w * _MASK)
