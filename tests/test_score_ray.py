"""`grpo-kit score --ray` on a real local Ray cluster (one per module): the same rows, order, scores,
timeouts and failures as a local run, resumable, from this process and from another driver."""

import json
import os
import subprocess
import sys

import pytest

from grpo_kit.cli import main
from grpo_kit.score_file import summary_path
from tests.conftest import ROOT, fixture
from tests.test_score_cli import read_jsonl, write_jsonl

STATS = ("rows", "rewards", "invalid_rows", "resumed_from_row", "scored_this_run", "worker_restarts")


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def rows_with_failures(n_groups: int = 30) -> list[dict]:
    """Groups of 4; one completion hangs (a timeout), one raises, one does not apply."""
    rows = []
    for g in range(n_groups):
        for j in range(4):
            text = {(3, 1): "SLEEP", (17, 2): "CRASH", (25, 0): "NONE"}.get((g, j), "ab" * (j + 1))
            rows.append({"prompt": f"p{g}", "completion": text, "answer": "abab"})
    return rows


ARGS = ["--reward", fixture("hostile"), "--reward", fixture("text_length") + "=0.5",
        "--reward", "kimi_length_penalty", "--workers", "1", "--timeout", "2", "--chunk-rows", "16",
        "--no-progress"]


def stats(out):
    s = json.loads(summary_path(out).read_text())
    return {k: s[k] for k in STATS}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The reference: the same command without --ray."""
    d = tmp_path_factory.mktemp("local")
    inp = write_jsonl(d / "in.jsonl", rows_with_failures())
    out = d / "out.jsonl"
    assert main(["score", str(inp), "-o", str(out), *ARGS]) == 0
    return inp, out


def test_ray_output_equals_the_local_output(cluster, local_run, tmp_path):
    inp, local = local_run
    out = tmp_path / "ray.jsonl"
    assert main(["score", str(inp), "-o", str(out), *ARGS, "--ray"]) == 0  # this process's cluster
    got = read_jsonl(out)
    assert got == read_jsonl(local)
    assert got[13]["reward_errors"][fixture("hostile")].startswith("timeout: timed out after 2 s")
    assert "ValueError: boom" in got[70]["reward_errors"][fixture("hostile")]
    assert got[100]["rewards"][fixture("hostile")] is None and "reward_errors" not in got[100]
    assert stats(out) == stats(local)  # worker_restarts too: the timeout killed one worker


def test_ray_resumes_a_partial_output(cluster, local_run, tmp_path):
    """23 complete rows (the middle of group p5) and a cut line; the Ray run finishes the file."""
    inp, local = local_run
    lines = local.read_text().splitlines(keepends=True)
    out = tmp_path / "ray.jsonl"
    out.write_text("".join(lines[:23]) + lines[23][:30])
    assert main(["score", str(inp), "-o", str(out), *ARGS, "--ray"]) == 0
    assert read_jsonl(out) == read_jsonl(local)
    s = json.loads(summary_path(out).read_text())
    assert s["resumed_from_row"] == 23 and s["scored_this_run"] == 97
    assert s["rewards"] == json.loads(summary_path(local).read_text())["rewards"]


def test_another_driver_joins_the_cluster_with_a_relative_reward_file(cluster, tmp_path):
    """`--ray HOST:PORT` from a new process, whose reward file is relative to its own directory (not
    the Ray workers' directory)."""
    (tmp_path / "my_rewards.py").write_text(
        "def doubled(completions, **columns):\n    return [2.0 * len(c) for c in completions]\n")
    write_jsonl(tmp_path / "in.jsonl", [{"completion": "x" * i} for i in range(1, 41)])
    cmd = [sys.executable, "-m", "grpo_kit.cli", "score", "in.jsonl", "-o", "out.jsonl", "--reward",
           "my_rewards.py:doubled", "--workers", "1", "--chunk-rows", "8", "--no-progress", f"--ray={cluster}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    got = read_jsonl(tmp_path / "out.jsonl")
    assert [r["rewards"] for r in got] == [{"my_rewards.py:doubled": 2.0 * i} for i in range(1, 41)]


def test_a_reward_failure_under_on_error_fail_is_one_line(cluster, tmp_path, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"completion": "ok"}, {"completion": "CRASH"}])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scoring:\n  workers: 1\n  on_error: fail\n")
    assert main(["score", str(inp), "-o", str(tmp_path / "o.jsonl"), "--reward", fixture("hostile"),
                 "--config", str(cfg), "--no-progress", "--ray"]) == 2
    err = capsys.readouterr().err
    assert "on_error: fail" in err and "ValueError: boom" in err and "Traceback" not in err


def test_without_ray_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    inp = write_jsonl(tmp_path / "in.jsonl", [{"completion": "a"}])
    assert main(["score", str(inp), "-o", str(tmp_path / "o.jsonl"), "--reward", fixture("text_length"),
                 "--no-progress", "--ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "grpo-kit score: error: --ray needs Ray: pip install grpo-kit[ray]"
