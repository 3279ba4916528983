"""The scoring engine: weights, None, errors, hard timeouts, worker replacement, column passing."""

import time

import pytest

from grpo_kit.config import RewardConfig, ScoringConfig
from grpo_kit.contract import RewardOutputError, check_output, completion_text
from grpo_kit.errors import ConfigError
from grpo_kit.registry import bind_reward, get_reward
from grpo_kit.scoring import Scorer
from tests.conftest import fixture


def scorer(*specs, workers=1, timeout=5.0):
    rewards = [s if isinstance(s, RewardConfig) else RewardConfig(name=s) for s in specs]
    return Scorer(rewards, ScoringConfig(workers=workers, timeout=timeout))


def test_weighted_sum_skips_none():
    rw = [RewardConfig(name=fixture("hostile"), weight=2.0, label="h"),
          RewardConfig(name=fixture("text_length"), weight=0.5, label="len")]
    with scorer(*rw) as s:
        res = s.score(["ab", "NONE"])
    assert res.rewards == {"h": [1.0, None], "len": [2.0, 4.0]}
    # 2*1 + 0.5*2 = 3; the None reward is left out: 0.5*4 = 2
    assert res.reward == [3.0, 2.0]
    assert res.score_fields(1) == {"rewards": {"h": None, "len": 4.0}, "reward": 2.0}


def test_all_none_gives_none_not_zero():
    with scorer(fixture("hostile")) as s:
        res = s.score(["NONE"])
    assert res.reward == [None]


def test_python_hang_is_killed_and_recorded():
    with scorer(fixture("hostile"), timeout=0.5) as s:
        t0 = time.monotonic()
        res = s.score(["ok", "SLEEP", "ok"])
        elapsed = time.monotonic() - t0
        assert s.pool.restarts == 1
    assert res.rewards["" + fixture("hostile")] == [1.0, None, 1.0]
    err = res.reward_errors[fixture("hostile")][1]
    assert err.startswith("timeout: timed out after 0.5 s")
    assert elapsed < 0.5 + 3.0


def test_c_level_hang_is_killed():
    # a big-integer power runs in C: no signal handler could stop it, only a kill
    with scorer(fixture("hostile"), timeout=0.5, workers=2) as s:
        t0 = time.monotonic()
        res = s.score(["POW", "ok", "ok", "ok"])
        assert time.monotonic() - t0 < 0.5 + 3.0
    assert res.reward_errors[fixture("hostile")][0].startswith("timeout")
    assert res.rewards[fixture("hostile")][1:] == [1.0, 1.0, 1.0]


def test_exception_and_dead_worker_are_recorded_and_run_continues():
    with scorer(fixture("hostile")) as s:
        res = s.score(["CRASH", "DIE", "ok"])
    errs = res.reward_errors[fixture("hostile")]
    assert errs[0].startswith("error: ValueError: boom")
    assert errs[1].startswith("error: worker died (exit code 3)")
    assert errs[2] is None and res.rewards[fixture("hostile")][2] == 1.0


def _pool_tasks(texts, timeout=5.0):
    return [((fixture("hostile"), ()), [t], {}, timeout) for t in texts]


def test_a_chunk_answers_in_batches_not_one_message_per_task():
    """256 fast tasks on one worker go out in 4 chunks of 64 and come back in about as many
    messages (a round trip per task cost 2x the time); every answer is the task's own."""
    from grpo_kit.workers import WorkerPool

    with WorkerPool(1) as pool:
        out = pool.run(_pool_tasks(["ok", "NONE"] * 128))
        assert pool.messages <= 8, pool.messages  # 4 chunks; a slow machine may split one by FLUSH_S
    assert [o.values for o in out] == [[1.0], [None]] * 128
    assert all(o.status == "ok" and 0 <= o.seconds < 1.0 for o in out)


@pytest.mark.parametrize("bad, status, reason", [("SLEEP", "timeout", "timed out after 0.5 s"),
                                                 ("DIE", "error", "worker died (exit code 3)"),
                                                 ("POW", "timeout", "timed out after 0.5 s")])
def test_a_failure_mid_chunk_is_the_running_tasks_and_the_held_answers_are_not_lost(bad, status, reason):
    """Chunks of 10 (40 tasks, 1 worker): the failing task is the 26th, after 5 finished tasks of
    its chunk whose answers the worker still held. The failure is recorded against that task
    alone (from the shared progress page, not from the last answer received), the held ones are
    run again, nothing is lost, and the limit counts from the failing task's own start."""
    from grpo_kit.workers import WorkerPool

    texts = ["ok"] * 40
    texts[25] = bad
    with WorkerPool(1) as pool:
        t0 = time.monotonic()
        out = pool.run(_pool_tasks(texts, timeout=0.5))
        elapsed = time.monotonic() - t0
        assert pool.restarts == 1
    assert [o.status for o in out] == ["ok"] * 25 + [status] + ["ok"] * 14
    assert out[25].reason.startswith(reason), out[25].reason
    assert all(o.values == [1.0] for i, o in enumerate(out) if i != 25)
    assert elapsed < 0.5 + 5.0
    if status == "timeout":
        assert 0.5 <= out[25].seconds < 0.5 + 2.0


def test_an_unpicklable_answer_is_that_tasks_error_and_the_batch_still_arrives():
    import socket
    from multiprocessing.connection import Connection

    from grpo_kit.workers import _send_answers

    a, b = socket.socketpair()
    tx, rx = Connection(a.detach()), Connection(b.detach())
    _send_answers(tx, [(0, "ok", [1.0], 0.1), (1, "ok", [lambda: 0], 0.1), (2, "ok", [None], 0.1)])
    got = rx.recv()
    assert [g[:2] for g in got] == [(0, "ok"), (1, "error"), (2, "ok")]
    assert got[1][2].startswith("result could not be sent back") and got[2][2] == [None]
    tx.close(), rx.close()


@pytest.mark.parametrize("completion, reason", [
    ("NAN", "returned nan"),  # NaN is refused: None is the way to say 'not applicable'
])
def test_bad_values_are_errors(completion, reason):
    with scorer(fixture("hostile")) as s:
        res = s.score([completion])
    assert reason in res.reward_errors[fixture("hostile")][0]
    assert res.rewards[fixture("hostile")] == [None]


def test_wrong_length_is_an_error_per_item():
    with scorer(fixture("wrong_length")) as s:
        res = s.score(["a", "b"])
    assert all("returned 2 values for 1 completions" in e for e in res.reward_errors[fixture("wrong_length")])


def test_fixed_signature_gets_only_its_columns_and_trl_chat_format():
    with scorer(fixture("answer_match"), fixture("trl_chat_length")) as s:
        chat = [[{"role": "assistant", "content": "42"}], [{"role": "assistant", "content": "7"}]]
        res = s.score(chat, {"answer": ["42", "42"], "other": [1, 2]})
    # answer_match gets plain text? no: completions are passed as they are; it strips strings only
    assert res.reward_errors[fixture("answer_match")][0] is not None  # a list has no .strip(): recorded
    assert res.rewards[fixture("trl_chat_length")] == [2.0, 1.0]
    with scorer(fixture("answer_match")) as s:
        res = s.score(["42", " 7 "], {"answer": ["42", "42"], "other": [1, 2]})
    assert res.rewards[fixture("answer_match")] == [1.0, 0.0]


def test_settings_are_bound_and_checked():
    with scorer(RewardConfig(name=fixture("with_setting"), args={"bonus": 0.5})) as s:
        assert s.score(["x"]).rewards[fixture("with_setting")] == [1.5]
    with pytest.raises(ConfigError, match="has no setting 'bonsu'; its settings: bonus"):
        bind_reward(fixture("with_setting"), {"bonsu": 1})  # a typo is caught even with **kwargs
    with pytest.raises(ConfigError, match="has no setting 'answer'; its settings: none"):
        bind_reward(fixture("answer_match"), {"answer": "4"})  # a data column is not a setting


def test_list_and_dict_settings_run_in_workers():
    """A setting's value may be a list or a dict (not hashable): the worker still binds and caches it."""
    cfg = RewardConfig(name=fixture("with_list_setting"), args={"words": ["x", "y"], "weights": {"y": 2.0}})
    with scorer(cfg) as s:
        assert s.score(["x", "xy", "z"]).rewards[fixture("with_list_setting")] == [1.0, 3.0, 0.0]
        assert s.score(["y"]).rewards[fixture("with_list_setting")] == [2.0]  # the cached binding


def test_unknown_reward_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown reward 'acurracy'; known rewards: .*math_accuracy"):
        get_reward("acurracy")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        get_reward(fixture("nope"))
    with pytest.raises(ConfigError, match="does not exist"):
        get_reward("no/such/file.py:fn")
    with pytest.raises(ConfigError, match="cannot import module"):
        get_reward("no_such_pkg.mod:fn")


def test_module_spec_loads():
    fn = get_reward("tests.fixture_rewards:text_length")
    assert fn(["abc"]) == [3.0]


def test_inline_mode_matches_pool():
    with scorer(fixture("text_length"), workers=0) as s:
        assert s.pool is None
        assert s.score(["abc", "de"]).rewards[fixture("text_length")] == [3.0, 2.0]


@pytest.mark.parametrize("value, ok", [
    ([1, 2.5, None], True),     # ints, floats and None are fine
    ([True], False),            # a bool is not a score
    (["1"], False),             # nor a string
    ((1.0,), True),             # a tuple is accepted
    ([float("inf")], False),    # infinities are refused like NaN
])
def test_check_output(value, ok):
    if ok:
        assert check_output(value, len(value)) == [float(v) if v is not None else None for v in value]
    else:
        with pytest.raises(RewardOutputError):
            check_output(value, len(value))


def test_completion_text_rejects_garbage():
    assert completion_text({"role": "assistant", "content": "x"}) == "x"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"
    with pytest.raises(TypeError):
        completion_text(3)
