"""grpo_kit.algorithms.advantages: hand-computed cases, loop references, degenerate groups."""

import math
import statistics

import pytest
import torch

from grpo_kit.errors import ConfigError
from grpo_kit.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    BASELINES,
    STD_SCALES,
    gae,
    get_advantage_estimator,
    group_advantages,
    rewards_at_last_token,
    whiten,
)

NAN = float("nan")
T = torch.tensor


def close(a, b, atol=1e-6):
    torch.testing.assert_close(a, T(b, dtype=a.dtype) if not isinstance(b, torch.Tensor) else b, atol=atol, rtol=0)


# --------------------------------------------------------------------------- group_advantages by hand

S3 = math.sqrt(1 / 3)  # unbiased std of [1, 0, 1, 0]: sqrt((4 * 0.5**2) / 3)


@pytest.mark.parametrize(
    "rewards, kwargs, expected",
    [
        # GRPO: mean 0.5, unbiased std sqrt(1/3): (1 - 0.5) / 0.57735 = 0.8660
        ([[1.0, 0.0, 1.0, 0.0]], {}, [[0.5 / S3, -0.5 / S3, 0.5 / S3, -0.5 / S3]]),
        # GRPO: mean 2, std sqrt(((1)^2 + 0 + 1^2) / 2) = 1: (r - 2) / 1
        ([[1.0, 2.0, 3.0]], {}, [[-1.0, 0.0, 1.0]]),
        # Dr. GRPO (no std): r - mean 2
        ([[3.0, 1.0]], {"std_scale": "none"}, [[1.0, -1.0]]),
        # RLOO: r_i - mean of the others: 1 - (0+0)/2, 0 - (1+0)/2, 0 - (1+0)/2
        ([[1.0, 0.0, 0.0]], {"baseline": "leave_one_out", "std_scale": "none"}, [[1.0, -0.5, -0.5]]),
        # RLOO with a NaN: n = 3, sum 1.5: 1 - 0.5/2, 0 - 1.5/2, NaN -> 0, 0.5 - 1/2
        ([[1.0, 0.0, NAN, 0.5]], {"baseline": "leave_one_out", "std_scale": "none"}, [[0.75, -0.75, 0.0, 0.0]]),
        # GRPO with a NaN: stats over [2, 0]: mean 1, std sqrt(2): +-1/sqrt(2)
        ([[2.0, NAN, 0.0]], {}, [[1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)]]),
        # batch std: centred [[.5, -.5], [0, 0]], std over 4 = sqrt(0.5 / 3): +-0.5 / 0.40825 = 1.2247
        ([[1.0, 0.0], [2.0, 2.0]], {"std_scale": "batch"}, [[1.224745, -1.224745], [0.0, 0.0]]),
    ],
)
def test_group_advantages_by_hand(rewards, kwargs, expected):
    close(group_advantages(T(rewards), **kwargs), expected, atol=1e-5)


@pytest.mark.parametrize("baseline", BASELINES)
@pytest.mark.parametrize("std_scale", STD_SCALES)
@pytest.mark.parametrize(
    "rewards",
    [
        [[0.7, 0.7, 0.7, 0.7]],  # all equal
        [[0.1, 0.1, 0.1]],  # all equal with rounding-prone values
        [[NAN, NAN, NAN]],  # no reward at all
        [[NAN, 3.0, NAN]],  # a single reward
        [[5.0]],  # G = 1
        [[1.0, NAN, 1.0]],  # equal once NaN is dropped
    ],
)
def test_degenerate_groups_get_zero(rewards, baseline, std_scale):
    adv = group_advantages(T(rewards), baseline=baseline, std_scale=std_scale)
    assert not adv.isnan().any()
    assert (adv == 0).all()


def test_group_advantages_validates():
    with pytest.raises(ValueError, match="baseline"):
        group_advantages(torch.zeros(1, 2), baseline="median")
    with pytest.raises(ValueError, match="std_scale"):
        group_advantages(torch.zeros(1, 2), std_scale="global")
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        group_advantages(torch.zeros(4))


def test_group_advantages_is_detached_and_keeps_float64():
    r = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    adv = group_advantages(r)
    assert adv.dtype == torch.float64 and not adv.requires_grad
    assert group_advantages(torch.tensor([[1, 0]])).dtype == torch.float32  # integer rewards


# --------------------------------------------------------------------------- loop reference


def reference_group_advantages(rewards, baseline, std_scale, eps):
    """One group at a time, in plain Python, straight from the definitions."""
    out = []
    for row in rewards.tolist():
        valid = [r for r in row if not math.isnan(r)]
        informative = len(valid) >= 2 and max(valid) > min(valid)
        adv_row = []
        for r in row:
            if math.isnan(r) or not informative:
                adv_row.append(0.0)
                continue
            if baseline == "mean":
                b = sum(valid) / len(valid)
            else:
                b = (sum(valid) - r) / (len(valid) - 1)
            a = r - b
            if std_scale == "group":
                a /= statistics.stdev(valid) + eps
            adv_row.append(a)
        out.append(adv_row)
    if std_scale == "batch":
        flat = [a for row, r_row in zip(out, rewards.tolist()) for a, r in zip(row, r_row) if not math.isnan(r)]
        s = statistics.stdev(flat) if len(flat) >= 2 else 0.0
        out = [[a / (s + eps) for a in row] for row in out]
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("baseline", BASELINES)
@pytest.mark.parametrize("std_scale", STD_SCALES)
def test_vectorised_matches_loop_reference(baseline, std_scale):
    gen = torch.Generator().manual_seed(0)
    B, G = 32, 6
    rewards = torch.randint(0, 3, (B, G), generator=gen).double()  # many ties and equal groups
    rewards += torch.rand(B, G, generator=gen, dtype=torch.float64) * (torch.rand(B, 1, generator=gen) < 0.5)
    rewards[torch.rand(B, G, generator=gen) < 0.2] = NAN
    rewards[0] = NAN  # a group with no reward
    got = group_advantages(rewards, baseline=baseline, std_scale=std_scale, eps=1e-6)
    want = reference_group_advantages(rewards, baseline, std_scale, 1e-6)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_leave_one_out_is_scaled_mean_baseline():
    # RLOO's advantage equals G/(G-1) times the mean-baseline one (Ahmadian et al. 2024, eq. 6)
    r = torch.rand(5, 4, dtype=torch.float64)
    loo = group_advantages(r, baseline="leave_one_out", std_scale="none")
    torch.testing.assert_close(loo, group_advantages(r, std_scale="none") * 4 / 3)


# --------------------------------------------------------------------------- GAE


def test_gae_by_hand():
    # gamma 0.9, lam 0.5 (gamma*lam = 0.45), r = [0, 0, 1], V = [.1, .2, .3]:
    # t=2: delta = 1 + 0 - .3 = .7;            A = .7
    # t=1: delta = 0 + .9*.3 - .2 = .07;       A = .07 + .45*.7 = .385
    # t=0: delta = 0 + .9*.2 - .1 = .08;       A = .08 + .45*.385 = .25325
    adv, ret = gae(T([[0.0, 0.0, 1.0]]), T([[0.1, 0.2, 0.3]]), torch.ones(1, 3), gamma=0.9, lam=0.5)
    close(adv, [[0.25325, 0.385, 0.7]])
    close(ret, [[0.35325, 0.585, 1.0]])  # A + V


def test_gae_skips_masked_tokens_and_empty_rows():
    # the middle token is masked (e.g. tool output): t=2 as above, A = .7;
    # t=0 bootstraps from V at t=2: delta = 0 + .9*.3 - .1 = .17; A = .17 + .45*.7 = .485
    r = T([[0.0, 5.0, 1.0], [1.0, 1.0, 1.0]])
    v = T([[0.1, 9.0, 0.3], [1.0, 1.0, 1.0]])
    mask = T([[1, 0, 1], [0, 0, 0]])
    adv, ret = gae(r, v, mask, gamma=0.9, lam=0.5)
    close(adv, [[0.485, 0.0, 0.7], [0.0, 0.0, 0.0]])
    close(ret, [[0.585, 0.0, 1.0], [0.0, 0.0, 0.0]])


def test_gae_with_unit_gamma_lambda_is_monte_carlo():
    # gamma = lam = 1: A_t = sum_{k >= t} r_k - V_t (the deltas telescope)
    r, v = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    adv, ret = gae(r, v, torch.ones(4, 7))
    mc = r.flip(-1).cumsum(-1).flip(-1)
    torch.testing.assert_close(adv, mc - v)
    torch.testing.assert_close(ret, mc)


def reference_gae(r, v, mask, gamma, lam):
    """Per sequence, in plain Python: compact the unmasked tokens, run the recursion, scatter back."""
    adv = torch.zeros_like(v)
    for b in range(r.shape[0]):
        idx = [t for t in range(r.shape[1]) if mask[b, t]]
        a_next, v_next = 0.0, 0.0
        for t in reversed(idx):
            delta = r[b, t].item() + gamma * v_next - v[b, t].item()
            a_next = delta + gamma * lam * a_next
            v_next = v[b, t].item()
            adv[b, t] = a_next
    return adv, (adv + v) * mask


def test_gae_matches_loop_reference():
    gen = torch.Generator().manual_seed(1)
    r = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    v = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    mask = torch.rand(6, 9, generator=gen) < 0.7
    mask[0] = False
    adv, ret = gae(r, v, mask, gamma=0.95, lam=0.9)
    want_adv, want_ret = reference_gae(r, v, mask, 0.95, 0.9)
    torch.testing.assert_close(adv, want_adv)
    torch.testing.assert_close(ret, want_ret)


def test_gae_validates_shapes():
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))


# --------------------------------------------------------------------------- helpers


def test_rewards_at_last_token():
    # rewards land on the last unmasked token; an empty row gets nothing
    out = rewards_at_last_token(T([2.0, 3.0, 4.0]), T([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]))
    close(out, [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_whiten():
    # masked entries [1, 3, 5]: mean 3, unbiased var 4: (x - 3) / 2; masked-out entries -> 0
    x = T([[1.0, 3.0, 99.0], [5.0, -7.0, 0.0]])
    mask = T([[1, 1, 0], [1, 0, 0]])
    close(whiten(x, mask, eps=0.0), [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    close(whiten(x, mask, shift_mean=False, eps=0.0), [[2.0, 3.0, 0.0], [4.0, 0.0, 0.0]])
    assert (whiten(x, torch.zeros(2, 3)) == 0).all()  # empty mask: zeros, not NaN
    assert not whiten(T([[4.0]]), T([[1]])).isnan().any()  # a single entry


# --------------------------------------------------------------------------- registry


def test_registry_names_and_unknown_name():
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "dr_grpo", "rloo", "reinforce_pp_baseline", "gae"}
    with pytest.raises(ConfigError, match="known: dr_grpo, gae, grpo, reinforce_pp_baseline, rloo"):
        get_advantage_estimator("ppo")


@pytest.mark.parametrize(
    "name, baseline, std_scale",
    [
        ("grpo", "mean", "group"),
        ("dr_grpo", "mean", "none"),
        ("rloo", "leave_one_out", "none"),
        ("reinforce_pp_baseline", "mean", "batch"),
    ],
)
def test_group_estimators_are_group_advantages_broadcast_over_tokens(name, baseline, std_scale):
    rewards = T([[1.0, 0.0, 0.5], [2.0, NAN, 0.0]])  # B=2, G=3
    mask = torch.ones(6, 4)
    mask[1, 2:] = 0
    adv, returns = get_advantage_estimator(name)(rewards, mask)
    want = group_advantages(rewards, baseline=baseline, std_scale=std_scale).reshape(6, 1) * mask
    close(adv, want)
    assert returns is None and not get_advantage_estimator(name).needs_values


def test_group_estimator_adds_token_rewards():
    # token rewards sum to the reward: [1, 0] + [0, 1] -> [1, 1]: all equal, so advantage 0
    mask = torch.ones(2, 2)
    adv, _ = get_advantage_estimator("dr_grpo")(T([[1.0, 0.0]]), mask, token_rewards=T([[0.0, 0.0], [0.5, 0.5]]))
    assert (adv == 0).all()


def test_gae_estimator():
    est = get_advantage_estimator("gae")
    assert est.needs_values
    with pytest.raises(ValueError, match="needs critic values"):
        est(torch.zeros(1, 2), torch.ones(2, 3))
    # B=1, G=2, T=2; row 0 rewarded 1 at its last token, row 1 has no reward (NaN)
    # row 0, V = 0, gamma = lam = 1: A = [1, 1], returns [1, 1]; row 1: A = 0, returns = V
    values = T([[0.0, 0.0], [0.3, 0.4]])
    adv, ret = est(T([[1.0, NAN]]), torch.ones(2, 2), values=values)
    close(adv, [[1.0, 1.0], [0.0, 0.0]])
    close(ret, [[1.0, 1.0], [0.3, 0.4]])
    # a KL penalty in the token rewards: r = [-0.1, 1 - 0.1]: A_0 = 0.8, A_1 = 0.9
    adv, _ = est(T([[1.0, NAN]]), torch.ones(2, 2), values=values, token_rewards=torch.full((2, 2), -0.1))
    close(adv[0], [0.8, 0.9])


def test_every_estimator_takes_the_same_arguments():
    rewards, mask = torch.rand(2, 4), torch.ones(8, 5)
    for name, est in ADVANTAGE_ESTIMATORS.items():
        adv, _ = est(rewards, mask, values=torch.zeros(8, 5), token_rewards=None, gamma=1.0, lam=0.95, eps=1e-6)
        assert adv.shape == (8, 5), name
