"""The policy-loss registry (``POLICY_LOSSES``), ``top_entropy_mask`` and their config switches.

Layers: hand-computed 2x3 cases per entry (loss and gradient, the numbers worked out here with
``math``); CISPO's autograd gradient against the paper's analytic one; one batch of 8 = 8
accumulated micro-batches of 1 for every entry and every ``agg``; each switch on and off on the same
inputs; the config (defaults per entry, errors); the demo's tiny model trains a few steps with
each entry without NaN.
"""

import inspect
import math

import pytest
import torch

from grpo_kit.algorithms.losses import (AGGREGATIONS, POLICY_LOSSES, clip_cov_loss, clip_cov_selection, cispo_loss,
                                        policy_loss_settings, top_entropy_mask)
from grpo_kit.errors import ConfigError
from grpo_kit.train.algorithm import Algorithm
from grpo_kit.train.config import GRPOConfig, _PolicyLossConfig, resolve_train_config
from tests.test_train import small_config

# --------------------------------------------------------------------------- the 2x3 batch
# old_logp = 0, so r = exp(logp); row 0 has A = +1 and three tokens, row 1 A = -1 and two tokens.
LOGP = [[0.1, -0.3, 0.5], [0.2, 0.0, -0.1]]
MASK = [[1, 1, 1], [1, 1, 0]]
ADV = [1.0, -1.0]
VALID = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
e = math.exp


def _run(name, agg="token_mean", **settings):
    logp = torch.tensor(LOGP, dtype=torch.float64, requires_grad=True)
    old, adv = torch.zeros(2, 3, dtype=torch.float64), torch.tensor(ADV, dtype=torch.float64)
    loss, metrics = POLICY_LOSSES[name](logp, old, adv, torch.tensor(MASK), agg=agg, **settings)
    loss.backward()
    return float(loss.detach()), logp.grad.tolist(), metrics


def _grid(values: dict) -> list[list[float]]:
    return [[values.get((b, t), 0.0) for t in range(3)] for b in range(2)]


def _sig(x):
    return 1.0 / (1.0 + e(-x))


def _ppo_clip_case():
    # A=+1: l = -min(r, 1.2), grad -r unless r > 1.2; A=-1: l = max(r, clip(r)) = r, grad r; / 5 tokens
    r = {k: e(LOGP[k[0]][k[1]]) for k in VALID}
    l = {(0, 0): -r[0, 0], (0, 1): -r[0, 1], (0, 2): -1.2, (1, 0): r[1, 0], (1, 1): r[1, 1]}
    g = {(0, 0): -r[0, 0], (0, 1): -r[0, 1], (0, 2): 0.0, (1, 0): r[1, 0], (1, 1): r[1, 1]}
    return sum(l.values()) / 5, _grid({k: v / 5 for k, v in g.items()})


def _cispo_case():
    # w = sg(clip(r, 0, 1.28)); l = -w A logp; grad -w A: the clipped token (r = 1.65) keeps grad -1.28
    w = {k: min(e(LOGP[k[0]][k[1]]), 1.28) for k in VALID}
    A = {k: ADV[k[0]] for k in VALID}
    loss = sum(-w[k] * A[k] * LOGP[k[0]][k[1]] for k in VALID) / 5
    return loss, _grid({k: -w[k] * A[k] / 5 for k in VALID})


def _gmpo_case():
    # row 0 (A>0): m = min(l, clip(l, -0.4, 0.4)) = [0.1, -0.3, 0.4], token 2 clipped (no grad);
    # row 1 (A<0): m = max(l, clip(l)) = [0.2, 0.0]; J_b = A_b exp(mean m); loss = mean_b(-J_b)
    s0, s1 = e((0.1 - 0.3 + 0.4) / 3), e((0.2 + 0.0) / 2)
    loss = (-s0 + s1) / 2
    g = {(0, 0): -s0 / 3 / 2, (0, 1): -s0 / 3 / 2, (0, 2): 0.0, (1, 0): s1 / 2 / 2, (1, 1): s1 / 2 / 2}
    return loss, _grid(g)


def _sapo_case():
    # tau = 1 (A>0), 1.05 (A<0); l = -sigma(tau (r-1)) 4/tau A; grad -A 4 s (1-s) r; seq-mean-token-mean
    out_l, out_g = {}, {}
    for k in VALID:
        A, tau, r = ADV[k[0]], 1.0 if ADV[k[0]] > 0 else 1.05, e(LOGP[k[0]][k[1]])
        s, n = _sig(tau * (r - 1)), (3 if k[0] == 0 else 2)
        out_l[k] = -s * 4 / tau * A / n / 2
        out_g[k] = -A * 4 * s * (1 - s) * r / n / 2
    return sum(out_l.values()), _grid(out_g)


def _clip_cov_case():
    # cov = (A - 0.2)(logp - 0.1): [0, -0.32, 0.32], [-0.12, 0.12]; band (0.1, 0.2) holds only (1, 1):
    # ppo_clip's value, and its gradient at (1, 1) (r = 1, A = -1: 1/5) detached to 0
    loss, g = _ppo_clip_case()
    g[1][1] = 0.0
    return loss, g


def _kl_cov_case():
    # top 1 of 5 by cov is (0, 2): l = -A r + |logp - 0| there; grad -A r + sign(0.5) = -1.65 + 1; / 5
    l = {k: -ADV[k[0]] * e(LOGP[k[0]][k[1]]) for k in VALID}
    g = dict(l)
    l[0, 2] += 0.5
    g[0, 2] += 1.0
    return sum(l.values()) / 5, _grid({k: v / 5 for k, v in g.items()})


HAND_CASES = [
    # clip 0.2 on both sides
    ("ppo_clip", "token_mean", {}, _ppo_clip_case),
    # the IS weight clipped above 1.28, every token keeps its gradient
    ("cispo", "token_mean", {}, _cispo_case),
    # the paper's clip 0.4 in log space, the geometric mean per sequence
    ("gmpo", "seq_mean_token_mean", {}, _gmpo_case),
    # the soft gate, tau 1 / 1.05
    ("sapo", "seq_mean_token_mean", {}, _sapo_case),
    # one token of the covariance band detached
    ("clip_cov", "token_mean", dict(clip_ratio=0.2, cov_low=0.1, cov_high=0.2), _clip_cov_case),
    # the one token of largest covariance penalised
    ("kl_cov", "token_mean", dict(kl_ratio=0.2), _kl_cov_case),
]


@pytest.mark.parametrize("name, agg, settings, case", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_hand_computed_loss_and_gradient(name, agg, settings, case):
    loss, grad, _ = _run(name, agg, **settings)
    want_loss, want_grad = case()
    assert loss == pytest.approx(want_loss, abs=1e-12)
    assert torch.allclose(torch.tensor(grad, dtype=torch.float64), torch.tensor(want_grad, dtype=torch.float64),
                          atol=1e-12), (grad, want_grad)


def test_every_entry_is_in_the_hand_table():
    assert sorted(c[0] for c in HAND_CASES) == sorted(POLICY_LOSSES)


# --------------------------------------------------------------------------- the signature


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_every_entry_has_the_common_signature(name):
    params = inspect.signature(POLICY_LOSSES[name]).parameters
    assert list(params)[:4] == ["logp", "old_logp", "advantages", "completion_mask"]
    for p in list(params.values())[4:]:
        assert p.kind is p.KEYWORD_ONLY and p.default is not p.empty, p.name
    assert {"agg", "max_len", "num_tokens", "num_seqs", "is_weights"} <= set(params)
    for setting in policy_loss_settings(name):  # every setting is a field of the algorithm block
        assert setting in _PolicyLossConfig.model_fields, setting
    assert POLICY_LOSSES[name].__doc__ and "arxiv.org/abs/" in POLICY_LOSSES[name].__doc__


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_advantages_per_sequence_or_per_token_agree(name):
    """``[N]`` advantages broadcast exactly as the same values written per token."""
    logp = torch.tensor(LOGP, dtype=torch.float64)
    m = torch.tensor(MASK)
    a = torch.tensor(ADV, dtype=torch.float64)
    extra = dict(kl_ratio=0.2) if name == "kl_cov" else dict(clip_ratio=0.2, cov_low=0.1, cov_high=0.2) \
        if name == "clip_cov" else {}
    one, _ = POLICY_LOSSES[name](logp, torch.zeros(2, 3, dtype=torch.float64), a, m, **extra)
    per_token, _ = POLICY_LOSSES[name](logp, torch.zeros(2, 3, dtype=torch.float64), a[:, None] * m, m, **extra)
    assert float(one) == pytest.approx(float(per_token), abs=1e-12)


# --------------------------------------------------------------------------- CISPO: the paper's gradient


def test_cispo_autograd_equals_the_analytic_gradient():
    """MiniMax-M1 eq. 4: grad = -sg(clip(r)) A grad(logp) on every token, the clipped ones included."""
    g = torch.Generator().manual_seed(0)
    old = torch.randn(4, 6, generator=g, dtype=torch.float64) - 1
    logp = (old + 0.6 * torch.randn(4, 6, generator=g, dtype=torch.float64)).requires_grad_()
    adv = torch.randn(4, generator=g, dtype=torch.float64)
    m = (torch.rand(4, 6, generator=g) > 0.2).long()
    loss, metrics = cispo_loss(logp, old, adv, m, clip_low=0.2, clip_high=0.3)
    loss.backward()
    w = (logp.detach() - old).exp().clamp(0.8, 1.3)
    assert torch.allclose(logp.grad, -w * adv[:, None] * m / m.sum(), atol=1e-12)
    assert metrics["clip_frac_high"] > 0 and metrics["clip_frac_low"] > 0  # both clips active here
    assert (logp.grad[(m > 0) & ((logp.detach() - old).exp() > 1.3)] != 0).all()  # clipped tokens keep grad


# --------------------------------------------------------------------------- accumulation invariance


def _batch8(seed=0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(8, 5, generator=g, dtype=torch.float64) * 2
    logp = old + 0.3 * torch.randn(8, 5, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 1, 4, 2, 5, 3, 2])
    m = (torch.arange(5)[None] < lengths[:, None]).long()
    adv = torch.randn(8, generator=g, dtype=torch.float64)
    w = 0.5 + torch.rand(8, 5, generator=g, dtype=torch.float64)
    return logp, old, adv, m, w


SETTINGS = {"clip_cov": dict(clip_ratio=0.2, cov_low=-1.0, cov_high=1.0), "kl_cov": dict(kl_ratio=0.2)}


@pytest.mark.parametrize("agg", AGGREGATIONS)
@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_one_batch_of_8_equals_8_micro_batches_of_1(name, agg):
    logp, old, adv, m, w = _batch8()
    fn, settings = POLICY_LOSSES[name], SETTINGS.get(name, {})
    selection = getattr(fn, "token_selection", None)
    whole = logp.clone().requires_grad_()
    kw = dict(agg=agg, max_len=5, is_weights=w, **settings)
    if selection is not None:
        kw["generator"] = torch.Generator().manual_seed(7)
    loss, _ = fn(whole, old, adv, m, **kw)
    loss.backward()
    selected = None
    if selection is not None:  # the batch's selection, as the trainer passes it to each micro-batch
        selected = selection(logp, adv, m, generator=torch.Generator().manual_seed(7), **settings)
        assert selected.any()
    micro = logp.clone().requires_grad_()
    total = 0.0
    for i in range(8):
        extra = {} if selected is None else {"selected": selected[i:i + 1]}
        part, _ = fn(micro[i:i + 1], old[i:i + 1], adv[i:i + 1], m[i:i + 1], agg=agg, max_len=5,
                     is_weights=w[i:i + 1], num_tokens=m.sum(), num_seqs=8, **settings, **extra)
        part.backward()
        total += float(part.detach())
    assert total == pytest.approx(float(loss.detach()), abs=1e-12)
    assert torch.allclose(micro.grad, whole.grad, atol=1e-12)


# --------------------------------------------------------------------------- each switch acting


def test_clip_cov_detaches_only_the_selected_tokens_and_the_draw_follows_the_generator():
    logp, old, adv, m, _ = _batch8()
    settings = dict(clip_ratio=0.2, cov_low=-1.0, cov_high=1.0)
    a = clip_cov_selection(logp, adv, m, generator=torch.Generator().manual_seed(1), **settings)
    b = clip_cov_selection(logp, adv, m, generator=torch.Generator().manual_seed(1), **settings)
    c = clip_cov_selection(logp, adv, m, generator=torch.Generator().manual_seed(2), **settings)
    assert torch.equal(a, b) and not torch.equal(a, c)  # deterministic per seed, other seeds other draws
    assert int(a.sum()) == int(0.2 * m.sum())  # floor(clip_ratio * N_valid) tokens
    grads = {}
    for name, kw in (("ppo_clip", {}), ("clip_cov", dict(selected=a, **settings))):
        x = logp.clone().requires_grad_()
        loss, _ = POLICY_LOSSES[name](x, old, adv, m, **kw)
        loss.backward()
        grads[name] = (float(loss.detach()), x.grad)
    assert grads["clip_cov"][0] == pytest.approx(grads["ppo_clip"][0], abs=1e-12)  # same value
    assert (grads["clip_cov"][1][a] == 0).all() and (grads["ppo_clip"][1][a] != 0).any()
    assert torch.equal(grads["clip_cov"][1][~a], grads["ppo_clip"][1][~a])


@pytest.mark.parametrize("entropy, mask, rho, expected", [
    # quantile 0.6 of [0.1, 0.3, 0.5, 0.7, 0.9] is 0.58 (linear): 0.7 and 0.9 kept; the masked 9.0 never
    ([[0.1, 0.9, 0.5], [0.3, 0.7, 9.0]], [[1, 1, 1], [1, 1, 0]], 0.4, [[0, 1, 0], [0, 1, 0]]),
    # rho = 1 keeps every valid token
    ([[0.1, 0.9, 0.5], [0.3, 0.7, 9.0]], [[1, 1, 1], [1, 1, 0]], 1.0, [[1, 1, 1], [1, 1, 0]]),
    # ties at the threshold are kept (>=)
    ([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], [[1, 1, 1], [1, 1, 1]], 0.2, [[1, 1, 1], [1, 1, 0]]),
    # no valid token: nothing kept
    ([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[0, 0, 0], [0, 0, 0]], 0.5, [[0, 0, 0], [0, 0, 0]]),
])
def test_top_entropy_mask(entropy, mask, rho, expected):
    assert top_entropy_mask(torch.tensor(entropy), torch.tensor(mask), rho).long().tolist() == expected


def test_top_entropy_quantile_in_the_algorithm_keeps_only_high_entropy_tokens_and_counts_them():
    """Through the trainer's algorithm object: with rho = 0.4 only (0, 1) and (1, 1) carry gradient,
    and the token-mean divides by 2 kept tokens, not 5."""
    ent = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.7, 9.0]])
    m = torch.tensor(MASK, dtype=torch.float64)
    logp = torch.tensor(LOGP, dtype=torch.float64)
    adv = torch.tensor(ADV, dtype=torch.float64)[:, None] * m
    results = {}
    for rho in (None, 0.4):
        algo = Algorithm(GRPOConfig(top_entropy_quantile=rho), max_new_tokens=3)
        keep, per_token, metrics = algo.policy_tokens(m, old_logp=torch.zeros_like(logp), entropy=ent, adv=adv)
        pm = m if keep is None else keep
        x = logp.clone().requires_grad_()
        loss, _ = algo.policy_loss(x, torch.zeros_like(logp), adv * pm, pm, is_weights=None,
                                   agg=algo.agg(pm.sum(), 2), per_token=per_token)
        loss.backward()
        results[rho] = (float(loss.detach()), x.grad, metrics)
    r01, r11 = e(LOGP[0][1]), e(LOGP[1][1])  # A=+1: -r; A=-1: +r (both inside the clip)
    assert results[0.4][0] == pytest.approx((-r01 + r11) / 2, abs=1e-12)  # kept tokens only, / 2
    assert (results[0.4][1] != 0).long().tolist() == [[0, 1, 0], [0, 1, 0]]
    assert (results[None][1] != 0).sum() == 4  # off: every unclipped valid token has gradient
    assert float(results[0.4][2]["policy/entropy_kept_frac"]) == pytest.approx(2 / 5)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("sets, message", [
    # an unknown name lists every valid one
    (["algorithm.policy_loss=nope"], "unknown policy loss 'nope'; valid: " + ", ".join(sorted(POLICY_LOSSES))),
    # another entry's setting names the chosen entry's own
    (["algorithm.policy_loss=sapo", "algorithm.clip_low=0.1"],
     "clip_low: not a setting of policy_loss 'sapo', whose settings are tau_pos, tau_neg"),
    # GMPO needs one advantage per sequence: refused with a critic
    (["algorithm.type=ppo", "algorithm.policy_loss=gmpo", "sampling.n=1"], "needs one advantage per sequence"),
    # fp16 is GPU only
    (["model.precision=fp16", "model.device=cpu"], "model.precision: fp16 needs a CUDA GPU"),
])
def test_config_errors(sets, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_train_config(None, sets)


def test_each_entry_brings_its_own_defaults_and_ppo_clip_keeps_todays():
    assert GRPOConfig().policy_loss == "ppo_clip"
    assert (GRPOConfig().clip_low, GRPOConfig().clip_high, GRPOConfig().ratio_level) == (0.2, 0.2, "token")
    assert (GRPOConfig(policy_loss="gmpo").clip_low, GRPOConfig(policy_loss="gmpo").clip_high) == (0.4, 0.4)
    assert (GRPOConfig(policy_loss="cispo").clip_low, GRPOConfig(policy_loss="cispo").clip_high) == (1.0, 0.28)
    assert GRPOConfig(policy_loss="gmpo", clip_high=0.3).clip_high == 0.3
    sapo = GRPOConfig(policy_loss="sapo")
    assert (sapo.tau_pos, sapo.tau_neg, sapo.clip_low) == (1.0, 1.05, None)
    assert GRPOConfig(**sapo.model_dump()) == sapo  # a saved config reloads (resume)
    algo = Algorithm(GRPOConfig(policy_loss="kl_cov", kl_coef=0.5), max_new_tokens=3)
    assert algo.loss_settings == {"kl_ratio": 2e-4, "kl_coef": 0.5} and algo.needs_step_logprobs


# --------------------------------------------------------------------------- the demo trains with each


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from grpo_kit.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"), seed=0, warm_start_steps=30)


RUNS = [[f"algorithm.policy_loss={n}"] for n in sorted(POLICY_LOSSES) if n != "ppo_clip"] + [
    ["algorithm.top_entropy_quantile=0.2"],
    ["algorithm.policy_loss=clip_cov", "algorithm.top_entropy_quantile=0.5", "train.minibatch_size=16",
     "algorithm.epochs=2", "train.micro_batch_size=4"],
]


@pytest.mark.parametrize("sets", RUNS, ids=["+".join(s.split("=")[1] for s in r[:2]) for r in RUNS])
def test_demo_trains_with_each_entry_without_nan(tmp_path, tiny_model, sets):
    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)), sets + ["train.steps=3"])
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        rows = [trainer.train_step() for _ in range(3)]
    finally:
        trainer.close()
    for row in rows:
        assert all(not isinstance(v, float) or v == v for v in row.values())  # no NaN
        assert row.get("skipped") or math.isfinite(row["loss/total"])
    trained = [r for r in rows if not r.get("skipped")]
    assert trained
    if "top_entropy_quantile" in " ".join(sets):
        assert all(0 < r["policy/entropy_kept_frac"] < 0.8 for r in trained)
    if len(sets) == 1 and "cov" in sets[0]:  # some tokens chosen (KL-Cov: at least one every step)
        assert any(r["policy/cov_selected_frac"] > 0 for r in trained)
    if sets[0].endswith("kl_cov"):
        assert all(r["policy/cov_selected_frac"] > 0 for r in trained)


# --------------------------------------------------------------------------- fp16 (GPU only: plumbing here)


def test_fp16_config_engine_dtype_follows_and_the_update_path_runs(tmp_path, tiny_model, monkeypatch):
    """On a machine that says it has CUDA, ``precision: fp16`` loads and the vLLM engine's dtype
    follows (float16). On this CPU the update then runs its fp16 path (``GradScaler("cuda")`` and
    fp16 autocast, both disabled by torch without CUDA): the calls are exercised, not the numerics."""
    import warnings

    from grpo_kit.train import update
    from grpo_kit.train.trainer import Trainer

    path = str(small_config(tmp_path, tiny_model))
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        cfg, _ = resolve_train_config(path, ["model.precision=fp16", "model.autocast=true", "train.steps=2"])
        assert cfg.vllm.dtype == "float16"
        with pytest.raises(ConfigError, match="the engine's dtype follows the trainer's"):
            resolve_train_config(path, ["model.precision=fp16", "vllm.dtype=bfloat16"])
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: CUDA not available, GradScaler/autocast disabled
            rows = [trainer.train_step() for _ in range(2)]
    finally:
        trainer.close()
    assert trainer.optimizer in update._SCALERS  # the loss scaler of this optimizer was made and kept
    assert all(r.get("skipped") or math.isfinite(r["loss/total"]) for r in rows)


# --------------------------------------------------------------------------- per-reward normalisation


def test_per_reward_group_advantages_by_hand():
    from grpo_kit.algorithms.advantages import group_advantages, per_reward_group_advantages

    # correctness [1, 0, 1, 0] -> +-sqrt(3)/2 (std 0.577); length [0, 10, 20, 30] -> (x - 15) / 12.91;
    # weights 1 and 0.5; a NaN length (does not apply) is left out of length's statistics and adds 0
    r = torch.tensor([[[1.0, 0.0], [0.0, 10.0], [1.0, 20.0], [0.0, 30.0]],
                      [[1.0, 5.0], [0.0, float("nan")], [0.0, 5.0], [0.0, 7.0]]], dtype=torch.float64)
    got = per_reward_group_advantages(r, torch.tensor([1.0, 0.5]))
    c, s_len = math.sqrt(3) / 2, math.sqrt(500 / 3)
    want0 = [c + 0.5 * (-15 / s_len), -c + 0.5 * (-5 / s_len), c + 0.5 * (5 / s_len), -c + 0.5 * (15 / s_len)]
    a1 = [1.5, -0.5, -0.5, -0.5]  # correctness of group 1: mean 0.25, std 0.5
    l1 = [(x - 17 / 3) / math.sqrt(4 / 3) for x in (5, 0, 5, 7)]  # lengths 5, -, 5, 7: mean 17/3, std sqrt(4/3)
    want1 = [a1[i] + (0.5 * l1[i] if i != 1 else 0.0) for i in range(4)]
    assert torch.allclose(got, torch.tensor([want0, want1], dtype=torch.float64), atol=1e-5)
    # on and off: the combined reward's order follows the length alone in group 0
    assert group_advantages(r[0:1].sum(-1)).argsort().tolist() == [[0, 1, 2, 3]]
    assert got[0].argsort().tolist() == [1, 3, 0, 2]  # the correct answers (0, 2) now rank on top


def test_reward_norm_per_reward_in_the_algorithm_equals_the_formula():
    """algorithm.reward_norm: per_reward gives sum_k w_k A(r_k) per token (per_reward_group_advantages
    for grpo), combined gives A(sum_k w_k r_k); the switch changes the advantages."""
    from grpo_kit.algorithms.advantages import group_advantages, per_reward_group_advantages
    from grpo_kit.train.algorithm import Algorithm
    from grpo_kit.train.batch import Masks
    from grpo_kit.train.config import GRPOConfig

    parts = torch.tensor([[[1.0, 0.0], [0.0, 10.0], [1.0, 20.0], [0.0, 30.0]]])  # [B=1, G=4, K=2]
    w = torch.tensor([1.0, 0.5])
    combined = (parts * w).sum(-1)  # [1, 4]
    mask = torch.ones(4, 3)
    m = Masks(mask.long(), combined, torch.zeros(4, dtype=torch.bool), torch.full((4,), 5), parts, w)
    per = Algorithm(GRPOConfig(reward_norm="per_reward"), max_new_tokens=3).advantages(m, mask)[0]  # [4, 3]
    comb = Algorithm(GRPOConfig(), max_new_tokens=3).advantages(m, mask)[0]
    assert torch.allclose(per[:, 0], per_reward_group_advantages(parts, w)[0], atol=1e-6)
    assert torch.allclose(comb[:, 0], group_advantages(combined)[0], atol=1e-6)
    assert per[:, 0].argsort().tolist() == [1, 3, 0, 2] and comb[:, 0].argsort().tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="needs each reward's scores"):
        Algorithm(GRPOConfig(reward_norm="per_reward"), max_new_tokens=3).advantages(
            Masks(mask.long(), combined, torch.zeros(4, dtype=torch.bool), torch.full((4,), 5)), mask)


def test_reward_norm_per_reward_config_and_a_training_step(tmp_path, tiny_model):
    """The trainer hands each reward's scores to the update: with two rewards of different scales
    (exact_match and a length reward weighted 0.1) one step's advantages differ from the combined
    normalisation's, and are the per-reward formula's."""
    from grpo_kit.train.trainer import Trainer

    with pytest.raises(ConfigError, match="reward_norm: per_reward normalises each reward alone"):
        resolve_train_config(None, ["algorithm.reward_norm=per_reward", "algorithm.kl.beta=0.1",
                                    "algorithm.kl.placement=reward"])
    with pytest.raises(ConfigError, match="reward_norm"):
        resolve_train_config(None, ["algorithm.type=ppo", "algorithm.reward_norm=per_reward"])
    rewards = ["rewards=[{name: exact_match}, {name: length_limit, weight: 0.1, args: {max_length: 2}}]"]
    adv = {}
    for norm in ("combined", "per_reward"):
        cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)),
                                      [f"algorithm.reward_norm={norm}", "train.steps=1", *rewards])
        trainer = Trainer(cfg, tmp_path / norm)
        try:
            rb, _ = trainer._rollouts_of(1)
        finally:
            trainer.close()
        from grpo_kit.train.batch import make_batch

        batch = make_batch(rb, trainer.tokenizer.pad_token_id, trainer.device, trainer._reward_weights)
        mask = trainer.algorithm.loss_mask(batch)
        adv[norm] = trainer.algorithm.advantages(batch, mask)[0][:, 0]
        if norm == "per_reward":
            assert batch.reward_parts.shape == (*batch.rewards.shape, 2)
            from grpo_kit.algorithms.advantages import per_reward_group_advantages

            want = per_reward_group_advantages(batch.reward_parts, batch.reward_weights).reshape(-1)
            on = mask[:, 0].bool()
            assert torch.allclose(adv[norm][on], want[on], atol=1e-5)
        else:
            assert batch.reward_parts is None
    assert float((adv["combined"] - adv["per_reward"]).abs().max()) > 0.1
