"""Asynchronous training (``train.async_level``): the fixed schedule (step s sampled with the
weights of step s-1-k, visible as the sampler/trainer KL), a SIGKILLed run that resumes to the
same metrics with its in-flight rollouts, and failure both ways (the rollout process dies or
fails; the trainer dies)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpo_kit.train.logger import read_metrics
from tests.conftest import ROOT
from tests.test_train import small_config

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
STEPS = 6
# tis_cap makes the sampler record its log-probs: rollout/kl_sampler_trainer then shows which
# weights sampled each step (0 up to rounding when they are the trainer's own)
SETS = ["--set", f"train.steps={STEPS}", "--set", "train.save_every=3", "--set", "algorithm.tis_cap=2",
        "--set", "distributed.timeout_s=60", "--set", "optim.lr=1e-3"]
TIMING = ("time/", "tokens_per_s", "async/wait")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from grpo_kit.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"), seed=0, warm_start_steps=30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model):
    """The same config synchronously and with async_level 1, uninterrupted."""
    root = tmp_path_factory.mktemp("runs")
    cfg = small_config(root, tiny_model)
    out = {}
    for k in (0, 1):
        run = root / f"k{k}"
        subprocess.run([sys.executable, "-m", "grpo_kit.cli", "train", str(cfg), "--output-dir", str(run), *SETS,
                        "--set", f"train.async_level={k}"], env=ENV, cwd=ROOT, check=True, timeout=300,
                       capture_output=True)
        out[k] = read_metrics(run / "metrics.jsonl")
    return cfg, out


def _strip(row):
    return {k: v for k, v in row.items() if not k.startswith(TIMING)}


def test_async_samples_each_step_with_the_weights_of_step_s_minus_2(runs):
    _, out = runs
    sync, async_ = out[0], out[1]
    assert [r["async/staleness_max"] for r in async_] == [0] + [1] * (STEPS - 1)
    assert "async/staleness_max" not in sync[0]
    # step 1: both sampled with the initial weights and the same seeds: the same completions and
    # rewards; the sampler's log-probs agree to rounding (another process's copy of the model)
    a, b = _strip(sync[0]), {k: v for k, v in _strip(async_[0]).items() if not k.startswith("async/")}
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if not k.startswith(("rollout/", "loss/"))} == \
        {k: v for k, v in b.items() if not k.startswith(("rollout/", "loss/"))}
    assert all(b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6) for k in a if k.startswith(("rollout/", "loss/")))
    # later steps: the synchronous sampler has the trainer's weights, the asynchronous one the
    # weights of one step before, which differ where that step updated them (not skipped)
    kl_sync = max(abs(r["rollout/kl_sampler_trainer"]) for r in sync if "skipped" not in r)
    kl_async = [r["rollout/kl_sampler_trainer"] for prev, r in zip(async_, async_[1:])
                if "skipped" not in r and "skipped" not in prev]
    assert len(kl_async) >= 3
    assert kl_sync < 1e-6 and min(kl_async) > 100 * max(kl_sync, 1e-9), (kl_sync, kl_async)
    assert all(r["rollout/is_weight_mean"] != 1.0 for prev, r in zip(async_, async_[1:])
               if "skipped" not in r and "skipped" not in prev)
    for r in async_:
        assert r["async/wait_trainer_s"] >= 0 and r["async/wait_sampler_s"] >= 0 and r["time/weight_sync"] >= 0


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"grpo_kit.train.pipeline" in cmd:
            out.append(int(d.name))
    return out


def test_sigkill_with_rollouts_in_flight_resumes_to_the_same_metrics(tmp_path, runs):
    """The checkpoint of step 3 holds the rollouts of step 4, sampled before it; the resumed run
    uses them, restarts the rollout process from the weights of step 3 and logs exactly the
    uninterrupted run's metrics (but timings). Killing the trainer alone also ends its rollout process."""
    cfg, out = runs
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "grpo_kit.cli", "train", str(cfg), "--output-dir", str(run), *SETS,
           "--set", "train.async_level=1"]
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 4):
        time.sleep(0.02)
    children = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the trainer only: its rollout process must follow
    proc.wait()
    assert len(children) == 1
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{children[0]}").exists():
        time.sleep(0.05)
    alive = Path(f"/proc/{children[0]}").exists()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group (nothing, if it went right)
    except ProcessLookupError:
        pass
    assert not alive, "the rollout process outlived its trainer"
    assert 4 <= metrics.read_text().count("\n") < STEPS
    done = subprocess.run(cmd + ["--resume"], env=ENV, cwd=ROOT, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "with the rollouts of 1 more steps sampled before it was saved" in done.stderr
    again = read_metrics(metrics)
    assert [r["step"] for r in again] == list(range(1, STEPS + 1))
    for a, b in zip(out[1], again):
        assert _strip(a) == _strip(b), f"step {a['step']} differs after resume"


def _trainer(tmp_path, model, *sets):
    from grpo_kit.train.config import resolve_train_config
    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(small_config(tmp_path, model)), ["train.async_level=1", "train.steps=4",
                                                                       "distributed.timeout_s=60", *sets])
    return Trainer(cfg, tmp_path / "run")


def test_a_dead_rollout_process_stops_the_trainer_with_the_reason(tmp_path, tiny_model):
    from grpo_kit.train.pipeline import RolloutProcessError

    tr = _trainer(tmp_path, tiny_model)
    try:
        tr.pipeline.proc.kill()
        t0 = time.monotonic()
        with pytest.raises(RolloutProcessError, match="exited with signal 9"):
            for _ in range(4):
                tr.train_step()
        assert time.monotonic() - t0 < 15
    finally:
        tr.close()


def test_a_failure_in_the_rollout_process_is_reported_by_the_trainer(tmp_path, tiny_model, fx):
    from grpo_kit.train.pipeline import RolloutProcessError

    tr = _trainer(tmp_path, tiny_model, f"rewards=[{{name: '{fx('wrong_length')}'}}]",
                  "scoring.on_error=fail")
    try:
        with pytest.raises(RolloutProcessError, match="RewardFailure"):
            tr.train_step()
    finally:
        tr.close()


def test_max_staleness_below_the_async_level_is_a_config_error(tmp_path, tiny_model):
    from grpo_kit.config import ConfigError
    from grpo_kit.train.config import resolve_train_config
    from grpo_kit.train.pipeline import check_staleness

    with pytest.raises(ConfigError, match="train.max_staleness = 0 is below train.async_level = 1"):
        resolve_train_config(str(small_config(tmp_path, tiny_model)), ["train.async_level=1", "train.max_staleness=0"])
    assert check_staleness(5, 4, 2, 2) == 2
    with pytest.raises(RuntimeError, match="3 versions from the trainer's"):
        check_staleness(5, 4, 1, 2)


def test_reference_log_probs_from_the_rollout_process_give_the_same_run(tmp_path, runs, tiny_model):
    """train.ref_in_rollout: the rollout process computes the KL's reference log-probs (its own
    copy of the initial weights) and sends them with the record; the trainer holds no reference
    and runs no reference forward, and every logged metric equals the k = 1 run's."""
    from grpo_kit.config import ConfigError
    from grpo_kit.train.config import resolve_train_config
    from grpo_kit.train.trainer import Trainer

    cfg, out = runs
    run = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "grpo_kit.cli", "train", str(cfg), "--output-dir", str(run), *SETS,
                    "--set", "train.async_level=1", "--set", "train.ref_in_rollout=true"], env=ENV, cwd=ROOT,
                   check=True, timeout=300, capture_output=True)
    rows = read_metrics(run / "metrics.jsonl")
    assert len(rows) == STEPS and all(r["time/ref_logprobs"] > 0 for r in rows)  # computed over there
    assert all("time/ref_logprobs" not in r for r in out[1])
    for a, b in zip(out[1], rows):
        a, b = _strip(a), {k: v for k, v in _strip(b).items()}
        assert a.keys() == b.keys()
        assert all(b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6) if isinstance(a[k], float) else b[k] == a[k]
                   for k in a), a["step"]
    c, _ = resolve_train_config(str(cfg), ["train.async_level=1", "train.ref_in_rollout=true", "train.steps=1"])
    tr = Trainer(c, tmp_path / "no-ref")
    try:
        assert tr.ref_model is None  # the trainer keeps no reference copy
    finally:
        tr.close()
    for sets in (["train.ref_in_rollout=true"], ["train.async_level=1", "train.ref_in_rollout=true",
                                                 "algorithm.kl.beta=0"]):
        with pytest.raises(ConfigError, match="train.ref_in_rollout computes the KL's reference log-probs"):
            resolve_train_config(str(cfg), sets)
