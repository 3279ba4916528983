"""The core's switches act as the formulas say, through the trainer's own wiring.

Each test compares a switch on and off on the same rollouts (the same model and seeds give the same
samples at step 1) and checks the difference the formula predicts, so a switch that is silently
ignored, swapped or replaced fails here. Also: the skip rule of the algorithm object (PPO with
n = 1 and with all-equal rewards), ``scoring.on_error``, switching ``algorithm.type`` with one
``--set``, the adaptive KL controller's units and the rollout record.
"""

import math
import pickle

import numpy as np
import pytest
import torch
import yaml

from grpo_kit.config import RewardConfig, ScoringConfig
from grpo_kit.records import RolloutBatch
from grpo_kit.scoring import RewardFailure, Scorer
from grpo_kit.train.batch import make_batch
from grpo_kit.train.config import PPOConfig, resolve_train_config
from tests.conftest import fixture
from tests.test_train import small_config

LENGTHS = f"rewards=[{{name: '{fixture('text_length')}', label: length}}]"
"""A reward with variance in every batch (completion lengths 1..3), so every switch has signal."""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from grpo_kit.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"), seed=0, warm_start_steps=30)


def trainer(tmp_path, model, sets, name="run"):
    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(small_config(tmp_path, model)), ["train.steps=1", *sets])
    return Trainer(cfg, tmp_path / name)


def first_batch(tmp_path, model, sets, name="run"):
    """The trainer, its step-1 rollouts and their tensors."""
    tr = trainer(tmp_path, model, sets, name)
    rb, _ = tr.collect(1)
    return tr, rb, make_batch(rb, tr.tokenizer.pad_token_id, tr.device)


# --------------------------------------------------------------------------- advantages


def expected_advantages(rb: RolloutBatch, estimator: str) -> np.ndarray:
    """The formulas, by hand, per completion."""
    out = np.zeros(rb.size)
    for g in rb.groups():
        r = np.array([rb.reward[i] for i in g], dtype=np.float64)
        mean, G = r.mean(), len(r)
        if estimator == "grpo":
            a = (r - mean) / (r.std(ddof=1) + 1e-6) if r.max() > r.min() else np.zeros(G)
        elif estimator == "dr_grpo":
            a = r - mean
        else:  # rloo: r minus the mean of the other G - 1
            a = r - (r.sum() - r) / (G - 1)
        out[g] = a
    return out


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_each_estimator_gives_its_formula_on_the_same_rollouts(tmp_path, tiny_model, estimator):
    sets = [f"algorithm.advantage={estimator}", "algorithm.kl.beta=0", LENGTHS]
    tr, rb, batch = first_batch(tmp_path, tiny_model, sets)
    try:
        mask = tr.algorithm.loss_mask(batch)
        adv, returns, _ = tr.algorithm.advantages(batch, mask)
    finally:
        tr.close()
    want = expected_advantages(rb, estimator)
    assert returns is None and np.ptp(want) > 0  # the batch has signal
    got = adv[:, 0].double().numpy()  # every token of a completion carries its advantage
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    tr = trainer(tmp_path, tiny_model, sets, name="step")  # a fresh trainer: the same step-1 rollouts
    try:
        row = tr.train_step()  # the update's own call reports the same advantages
    finally:
        tr.close()
    on = mask.bool()
    tok = np.repeat(want, on.sum(-1).numpy())
    assert math.isclose(row["advantage/max"], tok.max(), rel_tol=1e-5, abs_tol=1e-6)
    assert math.isclose(row["advantage/min"], tok.min(), rel_tol=1e-5, abs_tol=1e-6)


def test_dr_grpo_is_grpo_times_the_group_std(tmp_path, tiny_model):
    """The same rollouts under both: A_dr = A_grpo * (std_G + eps) in every group with variance."""
    advs, batches = {}, {}
    for est in ("grpo", "dr_grpo"):
        tr, rb, batch = first_batch(tmp_path, tiny_model, [f"algorithm.advantage={est}", LENGTHS], name=est)
        try:
            advs[est] = tr.algorithm.advantages(batch, tr.algorithm.loss_mask(batch))[0][:, 0]
        finally:
            tr.close()
        batches[est] = rb
    assert batches["grpo"].completion_ids == batches["dr_grpo"].completion_ids  # same rollouts
    std = torch.tensor([np.std([batches["grpo"].reward[j] for j in g], ddof=1) for g in batches["grpo"].groups()
                        for _ in g], dtype=torch.float32)
    has_var = std > 0
    torch.testing.assert_close(advs["dr_grpo"][has_var], advs["grpo"][has_var] * (std[has_var] + 1e-6))
    assert not torch.allclose(advs["dr_grpo"], advs["grpo"])


# --------------------------------------------------------------------------- clipping, masking


def test_clip_low_and_clip_high_act_on_their_own_side(tmp_path, tiny_model):
    """With clip_low = 0.1 and clip_high = 0.3, a ratio of 1.25 (A > 0) is inside [0.9, 1.3] and a
    ratio of 0.85 (A < 0) below it: only the low side clips, as the trainer's algorithm computes
    it. A trainer that swapped the two would clip the 1.25 instead."""
    tr = trainer(tmp_path, tiny_model, ["algorithm.clip_low=0.1", "algorithm.clip_high=0.3"])
    tr.close()
    logp = torch.log(torch.tensor([[1.25, 0.85]]))  # old log-probs 0: the ratios themselves
    mask = torch.ones(1, 2)
    adv = torch.tensor([[1.0, -1.0]])
    loss, m = tr.algorithm.policy_loss(logp.requires_grad_(), torch.zeros(1, 2), adv, mask, is_weights=None,
                                       agg=tr.algorithm.agg(None, None))
    assert m["clip_frac_high"] == 0 and m["clip_frac_low"] == 0.5
    loss.backward()  # the clipped token has no gradient, the unclipped one has
    assert logp.grad[0, 1] == 0 and logp.grad[0, 0] != 0


def test_clip_switches_move_the_clip_fractions_in_training(tmp_path, tiny_model):
    """The same rollouts, clipped tightly on one side and loosely on the other, then the reverse."""
    rows = {}
    for low, high in ((0.99, 0.1), (0.1, 0.99)):
        tr = trainer(tmp_path, tiny_model, [f"algorithm.clip_low={low}", f"algorithm.clip_high={high}",
                                            "algorithm.epochs=4", "optim.lr=1e-3", "algorithm.kl.beta=0", LENGTHS],
                     name=f"{low}-{high}")
        try:
            rows[high] = tr.train_step()
        finally:
            tr.close()
    assert rows[0.1]["policy/clip_frac_high"] > rows[0.99]["policy/clip_frac_high"]
    assert rows[0.99]["policy/clip_frac_low"] > rows[0.1]["policy/clip_frac_low"]


def test_mask_truncated_zeroes_truncated_rows(tmp_path, tiny_model):
    """max_new_tokens = 1: a completion is truncated unless its one token is eos."""
    masks = {}
    for on in (False, True):
        tr, rb, batch = first_batch(tmp_path, tiny_model, ["sampling.max_new_tokens=1",
                                                           f"algorithm.mask_truncated={str(on).lower()}"], name=str(on))
        tr.close()
        masks[on] = tr.algorithm.loss_mask(batch)
    trunc = torch.tensor(rb.truncated)
    assert trunc.any()
    assert masks[True][trunc].sum() == 0 and masks[False][trunc].sum() == trunc.sum()
    torch.testing.assert_close(masks[True][~trunc], masks[False][~trunc])


# --------------------------------------------------------------------------- rollout correction


def test_rollout_correction_switches_act_in_the_update(tmp_path, tiny_model):
    """Step-1 rollouts whose sampler log-probs are set to the trainer's own minus 0.5 on the first
    half of the rows (rho = e^0.5 = 1.65 on every token) and plus 1.0 on the second (rho = e^-1 =
    0.37), through the trainer's update with each switch: the metrics are the formulas' values."""
    import dataclasses

    from grpo_kit.train.batch import forward_logprobs
    from grpo_kit.train.update import policy_update

    tr, rb, batch = first_batch(tmp_path, tiny_model, ["algorithm.tis_cap=2", "algorithm.kl.beta=0", LENGTHS])
    tr.close()
    assert batch.sampler_logp is not None  # a correction on: the sampler recorded its log-probs
    with torch.no_grad():
        lp = forward_logprobs(tr.model, batch, temperature=tr.cfg.sampling.temperature, autocast=False)[0]
    N = batch.size
    first = (torch.arange(N) < N // 2)[:, None]  # [N, 1]
    shifted = dataclasses.replace(batch, sampler_logp=torch.where(first, lp - 0.5, lp + 1.0))
    all_low = dataclasses.replace(batch, sampler_logp=lp + 1.0)
    mask = tr.algorithm.loss_mask(batch)  # [N, T]
    n1, n2 = float(mask[: N // 2].sum()), float(mask[N // 2:].sum())
    rho1, rho2 = math.exp(0.5), math.exp(-1.0)

    def update(sets, b):
        t = trainer(tmp_path, tiny_model, ["algorithm.kl.beta=0", "optim.grad_clip=1e6", LENGTHS, *sets],
                    name="-".join(sets) or "off")  # a clip that never acts: the norm is logged
        t.close()
        return policy_update(t.model, None, t.optimizer, t.scheduler, b, t.cfg, t.algorithm, autocast=False,
                             beta=0.0, generator=torch.Generator().manual_seed(0))

    off = update([], shifted)  # no switch: weights 1, nothing masked, the mismatch still measured
    assert off["rollout/is_weight_mean"] == 1 and off["rollout/masked_frac"] == 0
    k3 = lambda r: r - 1 - math.log(r)  # noqa: E731
    assert off["rollout/kl_sampler_trainer"] == pytest.approx((n1 * k3(rho1) + n2 * k3(rho2)) / (n1 + n2), rel=1e-4)
    tok = update(["algorithm.tis_cap=2"], shifted)
    assert tok["rollout/is_weight_mean"] == pytest.approx((n1 * rho1 + n2 * rho2) / (n1 + n2), rel=1e-4)
    assert tok["rollout/is_weight_max"] == pytest.approx(rho1, rel=1e-4)
    capped = update(["algorithm.tis_cap=1.2", "algorithm.tis_level=sequence"], shifted)
    lens = mask.sum(-1)  # [N] tokens per row: the sequence weight is min(rho^len, cap)
    w = torch.where(first[:, 0], torch.full_like(lens, 1.2), torch.exp(-lens).clamp(max=1.2))
    assert capped["rollout/is_weight_mean"] == pytest.approx(float((w * lens).sum() / lens.sum()), rel=1e-4)
    for sets in (["algorithm.seq_mask_band=[0.5, 2.0]"], ["algorithm.token_mask_band=[0.5, 5.0]"]):
        masked = update(sets, shifted)  # rho2 = 0.37 is outside both bands, rho1 = 1.65 inside
        assert masked["rollout/masked_frac"] == pytest.approx(n2 / (n1 + n2), rel=1e-4), sets
    gone = update(["algorithm.token_mask_band=[0.5, 5.0]"], all_low)  # every token masked: no gradient
    assert gone["rollout/masked_frac"] == 1 and gone["loss/policy"] == 0 and gone["grad_norm"] == 0
    assert off["grad_norm"] > 0


def test_rollout_correction_bands_are_validated():
    with pytest.raises(Exception, match="0 < low <= 1 <= high"):
        resolve_train_config(None, ["algorithm.token_mask_band=[1.5, 5.0]"])


# --------------------------------------------------------------------------- the skip rule


def test_ppo_with_one_completion_per_prompt_trains(tmp_path, tiny_model):
    tr = trainer(tmp_path, tiny_model, ["algorithm.type=ppo", "sampling.n=1", "train.prompts_per_step=16",
                                        "algorithm.value.lr=1e-3"])
    try:
        rows = [tr.train_step() for _ in range(2)]
    finally:
        tr.close()
    assert all("skipped" not in r and math.isfinite(r["loss/value"]) for r in rows)
    assert rows[0]["zero_variance_groups"] == 0.0  # a group of one is not "no signal" to a critic


def test_all_equal_rewards_skip_grpo_but_not_ppo(tmp_path, tiny_model, fx):
    for sets, skipped in ((["algorithm.type=grpo"], True), (["algorithm.type=ppo"], False)):
        tr = trainer(tmp_path, tiny_model, sets, name=sets[0])
        tr.scorer.close()
        tr.scorer = tr.rollouts.scorer = Scorer([RewardConfig(name=fx("constant"))], tr.cfg.scoring)
        try:
            row = tr.train_step()
        finally:
            tr.close()
        assert ("skipped" in row) == skipped
        if not skipped:  # the critic learns from equal rewards, and the KL in the reward still acts
            assert math.isfinite(row["loss/value"]) and math.isfinite(row["loss/total"])


def test_ppo_refuses_dynamic_sampling_with_the_reason():
    with pytest.raises(ValueError, match="PPO's critic learns from them"):
        PPOConfig(dynamic_sampling=True)


# --------------------------------------------------------------------------- on_error


@pytest.mark.parametrize("on_error, combined", [
    ("exclude", [-0.2, None]),  # the completion whose penalty timed out gets no combined reward
    ("zero", [-0.2, 0.0]),      # the timed-out penalty counts as 0
])
def test_a_penalty_that_times_out_never_removes_its_penalty_silently(fx, on_error, combined):
    rewards = [RewardConfig(name=fx("with_setting"), label="base", weight=0.0),
               RewardConfig(name=fx("length_penalty_that_hangs"), label="penalty")]
    with Scorer(rewards, ScoringConfig(workers=1, timeout=0.5, on_error=on_error)) as s:
        rb = s.score(["ab", "SLEEP"])
    assert rb.reward_errors["penalty"][1].startswith("timeout")
    assert rb.reward[0] == pytest.approx(combined[0])
    assert rb.reward[1] == combined[1]


def test_on_error_fail_stops_with_the_reason(fx, tmp_path, capsys):
    from grpo_kit.cli import main

    rewards = [RewardConfig(name=fx("length_penalty_that_hangs"))]
    with Scorer(rewards, ScoringConfig(workers=1, timeout=0.5, on_error="fail")) as s:
        with pytest.raises(RewardFailure, match="failed on completion 1: timeout"):
            s.score(["ab", "SLEEP"])
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"completion": "ab"}\n{"completion": "SLEEP"}\n')
    cfg = tmp_path / "score.yaml"
    cfg.write_text(yaml.safe_dump({"rewards": [{"name": fx("length_penalty_that_hangs")}],
                                   "scoring": {"workers": 1, "timeout": 0.5, "on_error": "fail"}}))
    assert main(["score", str(inp), "-o", str(tmp_path / "out.jsonl"), "--config", str(cfg), "--no-progress"]) == 2
    assert "on_error: fail" in capsys.readouterr().err


def test_excluded_completions_get_no_gradient_in_training(tmp_path, tiny_model, fx):
    tr = trainer(tmp_path, tiny_model, [])
    tr.scorer.close()
    tr.scorer = tr.rollouts.scorer = Scorer([RewardConfig(name="exact_match"),
                                             RewardConfig(name=fx("fails_on_digit_one"), label="f")],
                                            tr.cfg.scoring)
    try:
        rb, _ = tr.collect(1)
        batch = make_batch(rb, tr.tokenizer.pad_token_id, tr.device)
        row = tr.train_step()
    finally:
        tr.close()
    failed = torch.tensor(["1" in c for c in rb.completions])
    assert failed.any() and (~failed).any()
    assert all((r is None) == bool(f) for r, f in zip(rb.reward, failed))
    mask = tr.algorithm.loss_mask(batch)
    assert mask[failed].sum() == 0 and mask[~failed].sum() > 0
    assert row["reward/excluded"] > 0 and row["rewards/f/errors"] == row["reward/excluded"]


# --------------------------------------------------------------------------- switching the type


def test_switching_to_ppo_with_one_set_brings_ppo_defaults(capsys):
    cfg, _ = resolve_train_config(None, ["algorithm.type=ppo"])  # the built-in demo is GRPO
    assert cfg.algorithm.type == "ppo" and cfg.algorithm.advantage == "gae"
    assert cfg.algorithm.kl.placement == "reward" and cfg.algorithm.kl.beta == 0.05  # PPO's, not the demo's
    assert "advantage, kl, loss_agg are dropped" in capsys.readouterr().err
    cfg, _ = resolve_train_config(None, ["algorithm.type=ppo", "algorithm.kl.beta=0.1"])  # a key set is kept
    assert cfg.algorithm.kl.beta == 0.1 and cfg.algorithm.kl.placement == "reward"
    cfg, _ = resolve_train_config(None, ["algorithm.type=grpo"])  # the same type: the file's keys stay
    assert cfg.algorithm.kl.beta == 0.04


def test_ppo_switch_on_the_demo_trains(tmp_path, tiny_model):
    tr = trainer(tmp_path, tiny_model, ["algorithm.type=ppo"])
    try:
        row = tr.train_step()
    finally:
        tr.close()
    assert tr.critic is not None and math.isfinite(row["loss/value"])


# --------------------------------------------------------------------------- adaptive KL


def test_adaptive_controller_moves_beta_by_sequence_kl(tmp_path, tiny_model):
    """Ziegler et al.: e = clip(KL_seq / target - 1, +-0.2); beta *= 1 + e * n / horizon, with
    n the step's sequences."""
    tr = trainer(tmp_path, tiny_model, ["algorithm.kl.beta=0.1", "algorithm.kl.target=0.001",
                                        "algorithm.kl.horizon=100", "algorithm.epochs=2", "optim.lr=3e-3", LENGTHS])
    try:
        row = tr.train_step()
    finally:
        tr.close()
    n = 8 * 4  # prompts_per_step x sampling.n
    e = min(max(row["kl/sequence"] / 0.001 - 1, -0.2), 0.2)
    assert row["kl/sequence"] > 0 and row["kl/beta"] != 0.1
    assert row["kl/beta"] == pytest.approx(0.1 * (1 + e * n / 100), rel=1e-6)


# --------------------------------------------------------------------------- the record


def test_rollout_record_round_trips_and_selects(tmp_path, tiny_model):
    tr, rb, _ = first_batch(tmp_path, tiny_model, [])
    tr.close()
    assert rb.policy_version == 0 and rb.num_groups == 8 and rb.size == 32
    again = RolloutBatch.from_dict(pickle.loads(pickle.dumps(rb.to_dict())))
    assert again == rb
    import json

    assert RolloutBatch.from_dict(json.loads(json.dumps(rb.to_dict()))) == rb
    part = rb.select_groups([3, 1])
    assert part.prompts == [rb.prompts[3], rb.prompts[1]]
    assert part.completions == [rb.completions[i] for i in rb.groups()[3] + rb.groups()[1]]
    assert part.column("answer") == [rb.group_columns["answer"][3]] * 4 + [rb.group_columns["answer"][1]] * 4
    whole = RolloutBatch.concat([rb.select_groups(range(4)), rb.select_groups(range(4, 8))])
    assert whole == rb


def test_each_reward_is_sent_only_the_columns_it_takes(fx):
    """An unpicklable column reaches no worker unless a reward asks for it."""
    with Scorer([RewardConfig(name=fx("answer_match"))], ScoringConfig(workers=1)) as s:
        rb = s.score(["4", "5"], {"answer": ["4", "4"], "blob": [lambda: 0, lambda: 1]})
    assert rb.rewards[fx("answer_match")] == [1.0, 0.0] and not any(rb.reward_errors[fx("answer_match")])


# --------------------------------------------------------------------------- the command line's errors


def test_a_programming_error_keeps_its_traceback(tmp_path, tiny_model, monkeypatch):
    """Only user errors (ConfigError, InputError, RewardFailure) become one line and exit 2; a
    KeyError from deep inside training is a bug and propagates with its traceback."""
    from grpo_kit.cli import main
    from grpo_kit.train.trainer import Trainer

    def broken_step(self):
        return {}["a bug"]

    monkeypatch.setattr(Trainer, "train_step", broken_step)
    cfg = small_config(tmp_path, tiny_model)
    with pytest.raises(KeyError, match="a bug"):
        main(["train", str(cfg), "--output-dir", str(tmp_path / "run")])
    assert main(["train", str(cfg), "--set", "algorithm.advantage=nope"]) == 2  # a user error: one line


def test_the_old_score_result_names_still_work_with_a_warning(fx):
    with Scorer([RewardConfig(name=fx("text_length"))], ScoringConfig(workers=0)) as s:
        rb = s.score(["abc"])
    with pytest.warns(DeprecationWarning, match="use .reward$"):
        assert rb.combined == [3.0]
    with pytest.warns(DeprecationWarning, match="use .score_fields"):
        assert rb.row(0) == rb.score_fields(0)
