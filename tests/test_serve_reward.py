"""Rewards over HTTP: `grpo-kit serve-reward` run for real (uvicorn, in a subprocess, on a free loopback
port) and `http_reward` as its client.

- the round trip equals direct scoring (combined, per reward, None and failures included; several
  requests in flight, cut between groups);
- malformed requests get a 4xx naming the field; the token, max_batch and the bounded queue (503 +
  Retry-After) are refused as documented; the server's per-item timeout is the scorer's;
- the server killed mid-run by `grpo-kit score`: its errors are recorded, the run goes on
  (`on_error: exclude`) or stops (`fail`), nothing hangs; a stopped (SIGSTOP) server times out;
- the client's switches (retries and backoff, timeout, concurrency, batch_size, token_env, key,
  on_item_error) against a scriptable stub (tests/http_stub.py).
"""

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from grpo_kit.cli import main
from grpo_kit.config import RewardConfig, ScoringConfig
from grpo_kit.scoring import RewardFailure, Scorer
from rewards._http import RemoteError
from rewards.http import http_reward
from tests.conftest import ROOT
from tests.http_stub import Stub, die_with_parent

TOKEN_ENV, TOKEN = "GRPO_KIT_TEST_TOKEN", "s3cret"

SERVER_REWARDS = '''
import os, signal, time
from grpo_kit.contract import completion_text


def nap(completions, delay=None):
    """Sleeps `delay` seconds when the request has that column; else does not apply."""
    if delay is None:
        return [None] * len(completions)
    time.sleep(float(delay[0]))
    return [0.0] * len(completions)


def flaky(completions, **_):
    """Raises on a completion that says BOOM; else does not apply."""
    if any("BOOM" in completion_text(c) for c in completions):
        raise ValueError("BOOM said the completion")
    return [None] * len(completions)


def die(completions, **_):
    """Kills the reward server (this worker's parent) on a completion that says KILL."""
    if any("KILL" in completion_text(c) for c in completions):
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)
    return [None] * len(completions)
'''


def launch(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """`grpo-kit serve-reward ARGS --port 0` in a subprocess, not waited for (see :func:`url_of`)."""
    return subprocess.Popen([sys.executable, "-m", "grpo_kit", "serve-reward", *args, "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, preexec_fn=die_with_parent)


def url_of(proc: subprocess.Popen, limit_s: float = 60.0) -> str:
    """The base URL a launched server prints once it serves (at most ``limit_s`` seconds)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"serve-reward exited ({proc.wait(timeout=10)}): {proc.stderr.read()[-2000:]}")
        if " on http://" in line:
            return line.split(" on ")[1].split()[0]
    proc.kill()
    raise RuntimeError(f"serve-reward did not start within {limit_s:g} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "server_rewards.py"
    path.write_text(SERVER_REWARDS)
    return path


def served_rewards(reward_file: Path) -> list[RewardConfig]:
    return [RewardConfig(name="math_accuracy"), RewardConfig(name="think_format", weight=0.5),
            RewardConfig(name=f"{reward_file}:nap", label="nap"),
            RewardConfig(name=f"{reward_file}:flaky", label="flaky")]


@pytest.fixture(scope="module")
def server_proc(reward_file, tmp_path_factory):
    """The server of most tests: math_accuracy + think_format x0.5 + the two fixture rewards, one
    worker, a 1 s per-item timeout, a queue of 2, at most 64 completions a request, a token. The two
    servers that test_server_killed_mid_run kills are launched once it serves, to start meanwhile."""
    cfg = tmp_path_factory.mktemp("cfg") / "serve.yaml"
    cfg.write_text(json.dumps({"rewards": [r.model_dump(exclude_none=True) for r in served_rewards(reward_file)],
                               "scoring": {"workers": 1, "timeout": 1.0},
                               "server": {"max_queue": 2, "max_batch": 64, "token_env": TOKEN_ENV}}))
    proc = launch(["--config", str(cfg)], env={TOKEN_ENV: TOKEN})
    url = url_of(proc)
    VICTIMS[:] = [launch(["--reward", "math_accuracy", "--reward", f"{reward_file}:die", "--workers", "1"])
                  for _ in range(2)]
    yield proc, url
    for p in [proc, *VICTIMS]:
        stop(p)


VICTIMS: list[subprocess.Popen] = []


@pytest.fixture(scope="module")
def server(server_proc):
    return server_proc[1]


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def rows() -> tuple[list, dict, list]:
    """The example file's 12 completions (3 prompts), a chat completion, prose gold (None), BOOM."""
    data = [json.loads(line) for line in (ROOT / "examples" / "completions.jsonl").read_text().splitlines()]
    data += [{"prompt": "p4", "completion": [{"role": "assistant", "content": "<think>x</think><answer>7</answer>"}],
              "answer": "7"},
             {"prompt": "p4", "completion": "<think>x</think><answer>7</answer>", "answer": "Answer is seven."},
             {"prompt": "p5", "completion": "BOOM <answer>1</answer>", "answer": "1"}]
    return [r["completion"] for r in data], {k: [r[k] for r in data] for k in ("prompt", "answer")}, \
        [r["prompt"] for r in data]


def score_with(rewards: list[RewardConfig], on_error: str = "exclude"):
    completions, columns, gids = rows()
    with Scorer(rewards, ScoringConfig(workers=1, timeout=2, on_error=on_error)) as scorer:
        return scorer.score(completions, columns, gids)


def remote(url: str, **args) -> RewardConfig:
    return RewardConfig(name="http_reward", args={"url": url, "token_env": TOKEN_ENV, "retries": 0, **args},
                        label=args.get("key") or "remote")


# --------------------------------------------------------------------------- the round trip
def test_round_trip_equals_direct_scoring(server, reward_file, token):
    direct = score_with(served_rewards(reward_file))
    assert direct.reward_errors["flaky"][-1].startswith("error: ValueError: BOOM")  # the failure is in the data
    # the server's combined reward, 4 requests of ~4 completions (cut between prompts), 2 in flight
    via = score_with([remote(server, on_item_error="server", batch_size=4, concurrency=2),
                      remote(server, key="math_accuracy", on_item_error="server"),
                      remote(server, key="think_format")])
    assert via.rewards["remote"] == direct.reward  # None where a reward failed (exclude) or none applies
    assert via.rewards["remote"][-1] is None and via.rewards["remote"][-2] == 0.5  # BOOM; prose gold -> None
    assert via.rewards["math_accuracy"] == direct.rewards["math_accuracy"]
    assert via.rewards["think_format"] == direct.rewards["think_format"]
    assert all(e is None for errs in via.reward_errors.values() for e in errs)


def test_a_training_batch_round_trips(server, reward_file, token):
    """The record training scores: chat prompts and completions, completion_ids, group columns."""
    from grpo_kit.records import RolloutBatch

    def batch():
        prompts = [[{"role": "user", "content": "2+2?"}], [{"role": "user", "content": "3+3?"}]]
        rb = RolloutBatch.from_groups(prompts=[None, None], prompt_ids=[[1], [2]],
                                      completions=[["<think>a</think><answer>4</answer>", "5"],
                                                   ["<answer>6</answer>", "BOOM"]],
                                      completion_ids=[[[1, 2], [3]], [[4], [5, 6]]])
        return rb.with_prompts(prompts, {"answer": ["4", "6"]})

    cfg = ScoringConfig(workers=1, timeout=2)
    with Scorer(served_rewards(reward_file), cfg) as direct, \
            Scorer([remote(server, on_item_error="server")], cfg) as via:
        want, got = direct.score_batch(batch()), via.score_batch(batch())
    assert got.completions[0] == [{"role": "assistant", "content": "<think>a</think><answer>4</answer>"}]
    assert got.rewards["remote"] == want.reward == [1.5, 0.0, 1.0, None]


def test_a_failure_on_the_server_fails_the_call_unless_on_item_error_server(server, token):
    batch = ["<answer>1</answer>", "BOOM", "<answer>2</answer>"]
    with pytest.raises(RemoteError, match=r"1 of 3 completions failed on the server, e.g. completion 1: "
                                          r"flaky: error: ValueError: BOOM"):
        asyncio.run(http_reward(batch, answer=["1", "1", "2"], url=server, token_env=TOKEN_ENV))
    out = asyncio.run(http_reward(batch, answer=["1", "1", "2"], url=server, token_env=TOKEN_ENV,
                                  on_item_error="server"))
    assert out == [1.0, None, 1.0]  # the server's combined value: excluded (its on_error) where BOOM failed
    # as one reward of a scorer: recorded for each completion of the batch, never 0
    with Scorer([remote(server)], ScoringConfig(workers=0)) as scorer:
        rb = scorer.score(batch, {"answer": ["1", "1", "2"]})
    assert rb.reward == [None] * 3 and all("completions failed on the server" in e for e in rb.reward_errors["remote"])


def test_the_server_times_out_an_item_as_score_does(server, token):
    r = httpx.post(f"{server}/score", json={"completions": ["a"], "delay": [5]}, timeout=30,
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert r.json()["reward_errors"]["nap"] == ["timeout: timed out after 1 s; worker killed"]


# --------------------------------------------------------------------------- refusals
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("body, headers, status, reason", [
    (b"{not json", AUTH, 400, "the body is not JSON"),                                         # not JSON
    (b'["a"]', AUTH, 422, "must be a JSON object"),                                           # not an object
    (b'{"answer": ["4"]}', AUTH, 422, "field 'completions' is required"),                      # no completions
    (b'{"completions": "4"}', AUTH, 422, "field 'completions' must be a list, got str"),       # not a list
    (b'{"completions": ["4", 5]}', AUTH, 422, "field 'completions[1]' must be a string"),      # a bad item
    (b'{"completions": [[{"role": "assistant"}]]}', AUTH, 422, "completions[0]': a chat completion"),  # no content
    (b'{"completions": ["4"], "answer": "4"}', AUTH, 422, "column 'answer' must be a list"),   # a scalar column
    (b'{"completions": ["4"], "answer": ["4", "5"]}', AUTH, 422, "column 'answer' has 2 values for 1"),  # length
    (b'{"completions": ["4"], "group_ids": [1, 2]}', AUTH, 422, "field 'group_ids' must be a list"),  # ids
    (json.dumps({"completions": ["4"] * 65}).encode(), AUTH, 413, "at most 64 (server.max_batch)"),  # too many
    (b'{"completions": ["4"]}', {}, 401, "missing or wrong token"),                            # no token
    (b'{"completions": ["4"]}', {"Authorization": "Bearer nope"}, 401, "missing or wrong token"),  # wrong token
])
def test_malformed_requests_get_a_4xx_with_the_reason(server, body, headers, status, reason):
    r = httpx.post(f"{server}/score", content=body, headers={"Content-Type": "application/json", **headers},
                   timeout=10)
    assert r.status_code == status, r.text
    assert reason in r.json()["detail"]


def test_health(server):
    h = httpx.get(f"{server}/health", timeout=10).json()  # no token needed
    assert h["status"] == "ok" and h["max_queue"] == 2 and h["max_batch"] == 64
    assert h["rewards"]["think_format"] == {"name": "think_format", "weight": 0.5, "scope": "item"}


def test_http_reward_retries_an_overloaded_server_until_it_answers(server, token):
    """Retry-After honoured: the client waits and succeeds instead of failing the batch."""
    async def main():
        async with httpx.AsyncClient(timeout=30, headers=AUTH) as client:
            busy = [client.post(f"{server}/score", json={"completions": ["a"], "delay": [0.3]}) for _ in range(3)]
            task = asyncio.gather(*busy)
            await asyncio.sleep(0.15)  # the queue is full now
            mine = await http_reward(["<answer>3</answer>"], answer=["3"], url=server, token_env=TOKEN_ENV,
                                     retries=3, backoff=0.1)
            await task
            return mine

    assert asyncio.run(main()) == [1.0]


def test_overload_is_refused_at_once_with_503_and_retry_after(server):
    async def main():
        async with httpx.AsyncClient(timeout=30, headers=AUTH) as client:
            one = lambda: client.post(f"{server}/score", json={"completions": ["a"], "delay": [0.6]})  # noqa: E731
            t0 = time.monotonic()
            return await asyncio.gather(*[one() for _ in range(6)]), time.monotonic() - t0

    answers, seconds = asyncio.run(main())
    codes = [r.status_code for r in answers]
    # one scored, two queued (max_queue 2), the rest refused (all of them when the six meet at once)
    assert set(codes) == {200, 503} and codes.count(200) >= 3 and codes.count(503) >= 2, codes
    refused = [r for r in answers if r.status_code == 503]
    assert all(int(r.headers["Retry-After"]) >= 1 and "overloaded" in r.json()["detail"] for r in refused)
    assert seconds < 6  # the three queued ones ran one after another (~1.8 s); the refusals did not wait


# --------------------------------------------------------------------------- a server that dies or hangs
def test_server_killed_mid_run(server_proc, tmp_path, capsys):
    """`grpo-kit score` through http_reward; the 5th row kills the server: the first chunk is scored,
    the rest recorded as errors and excluded (the run goes on); under `fail` it stops after chunk 1."""
    data = tmp_path / "in.jsonl"
    lines = [{"prompt": f"p{i // 4}", "completion": "KILL" if i == 4 else f"<answer>{i}</answer>", "answer": str(i)}
             for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    servers = [(p, url_of(p)) for p in VICTIMS]  # launched with the module's server; each run kills one
    for (proc, url), (on_error, code) in zip(servers, (("exclude", 0), ("fail", 2))):
        cfg = tmp_path / f"{on_error}.yaml"
        cfg.write_text(json.dumps({"rewards": [{"name": "http_reward", "args": {
            "url": url, "timeout": 5, "retries": 2, "backoff": 0.1}}], "scoring": {"on_error": on_error}}))
        out = tmp_path / f"{on_error}.jsonl"
        t0 = time.monotonic()
        assert main(["score", str(data), "-o", str(out), "--config", str(cfg), "--chunk-rows", "4",
                     "--workers", "1", "--no-progress"]) == code
        assert time.monotonic() - t0 < 30
        assert proc.wait(timeout=10) == -signal.SIGKILL  # the server is dead
        scored = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["reward"] for r in scored[:4]] == [1.0] * 4
        if on_error == "exclude":
            assert len(scored) == 12 and all(r["reward"] is None for r in scored[4:])
            assert all("RemoteError: could not reach" in r["reward_errors"]["http_reward"] for r in scored[4:])
            summary = json.loads((tmp_path / "exclude.summary.json").read_text())
            assert summary["rewards"]["http_reward"]["errors"] == 8
        else:
            assert len(scored) == 4
            assert ("reward 'http_reward' failed on completion 0: error: RemoteError: could not reach"
                    in capsys.readouterr().err)


def test_a_stopped_server_times_out_and_nothing_hangs(server_proc, token):
    proc, url = server_proc
    call = lambda **kw: asyncio.run(http_reward(["<answer>1</answer>"], answer=["1"], url=url,  # noqa: E731
                                                token_env=TOKEN_ENV, **kw))
    assert call() == [1.0]
    proc.send_signal(signal.SIGSTOP)  # accepts connections (the kernel's backlog), never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(RemoteError, match=r"no answer within 0.5 s .* \(after 2 attempts\)"):
            call(timeout=0.5, retries=1, backoff=0.1)
        assert time.monotonic() - t0 < 3  # 2 x 0.5 s + 0.1 s backoff
    finally:
        proc.send_signal(signal.SIGCONT)
    assert call() == [1.0]  # and it serves again


# --------------------------------------------------------------------------- client switches (stub)
@pytest.fixture(scope="module")
def stub():
    with Stub() as s:
        yield s


def answer_ok(path, body, headers):
    n = len(body["completions"])
    return 200, {"rewards": {"r": [1.0] * n}, "reward_errors": {"r": [None] * n}, "reward": [2.0] * n}, {}


def test_retries_and_backoff(stub):
    calls = []

    def flaky_503(path, body, headers):
        calls.append(time.monotonic())
        return (503, {"detail": "busy"}, {"Retry-After": "0"}) if len(calls) < 3 else answer_ok(path, body, headers)

    stub.handler = flaky_503
    assert asyncio.run(http_reward(["a"], url=stub.url, retries=2, backoff=0.1)) == [2.0]
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert len(calls) == 3 and gaps[0] >= 0.1 and gaps[1] >= 0.2  # backoff, then doubled
    calls.clear()
    with pytest.raises(RemoteError, match=r"answered 503: busy \(after 1 attempts\)"):  # retries=0: one try
        asyncio.run(http_reward(["a"], url=stub.url, retries=0, backoff=0.1))
    calls.clear()
    stub.handler = lambda p, b, h: (calls.append(1), (422, {"detail": "column 'answer' is odd"}, {}))[1]
    with pytest.raises(RemoteError, match="answered 422: column 'answer' is odd$"):  # a 4xx is not retried
        asyncio.run(http_reward(["a"], url=stub.url, retries=3, backoff=0.1))
    assert len(calls) == 1


def test_timeout(stub):
    async def slow(path, body, headers):
        await asyncio.sleep(2)
        return answer_ok(path, body, headers)

    stub.handler = slow
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match=r"no answer within 0.3 s"):
        asyncio.run(http_reward(["a"], url=stub.url, timeout=0.3, retries=0))
    assert time.monotonic() - t0 < 1.5


def test_batch_size_cuts_between_groups_and_concurrency_bounds_requests(stub):
    async def slowish(path, body, headers):
        await asyncio.sleep(0.1)
        return answer_ok(path, body, headers)

    stub.handler = slowish
    prompts = [f"p{i // 3}" for i in range(12)]  # 4 groups of 3
    for concurrency in (1, 3):
        stub.reset()
        out = asyncio.run(http_reward(["a"] * 12, prompt=prompts, prompts=prompts, answer=["x"] * 12,
                                      url=stub.url, batch_size=4, concurrency=concurrency))
        assert out == [2.0] * 12
        sizes = [len(r["body"]["completions"]) for r in stub.requests]
        assert sorted(sizes) == [6, 6]  # 4 completions, then to the end of the group: 6 and 6
        assert stub.max_in_flight == min(concurrency, 2)
        body = stub.requests[0]["body"]
        assert set(body) == {"completions", "prompt", "answer", "group_ids"}  # `prompts` sent once, as prompt
    stub.reset()
    asyncio.run(http_reward(["a"] * 12, url=stub.url, batch_size=1, concurrency=3))
    assert len(stub.requests) == 12 and stub.max_in_flight == 3


def test_token_env_and_key(stub, monkeypatch):
    stub.handler = answer_ok
    stub.reset()
    monkeypatch.setenv("MY_TOKEN", "abc")
    assert asyncio.run(http_reward(["a"], url=stub.url, token_env="MY_TOKEN", key="r")) == [1.0]
    assert stub.requests[0]["headers"]["authorization"] == "Bearer abc"
    asyncio.run(http_reward(["a"], url=stub.url))
    assert "authorization" not in stub.requests[1]["headers"]
    monkeypatch.delenv("MY_TOKEN")
    with pytest.raises(ValueError, match="environment variable MY_TOKEN is empty or unset"):
        asyncio.run(http_reward(["a"], url=stub.url, token_env="MY_TOKEN"))
    with pytest.raises(RemoteError, match=r"serves no reward 'nope'; it serves: r"):
        asyncio.run(http_reward(["a"], url=stub.url, key="nope"))


@pytest.mark.parametrize("answer, reason", [
    ({"reward": [1.0]}, "without a 'rewards' object"),                                     # not our contract
    ({"rewards": {}, "reward": [1.0, 2.0]}, "answered 2 values for 1 completions"),         # wrong length
    ({"rewards": {}, "reward": ["x"]}, None),                                               # a string: caught by the scorer
])
def test_an_answer_outside_the_contract_is_an_error(stub, answer, reason):
    stub.handler = lambda p, b, h: (200, answer, {})
    with Scorer([RewardConfig(name="http_reward", args={"url": stub.url})], ScoringConfig(workers=0)) as scorer:
        rb = scorer.score(["a"])
    assert rb.reward == [None] and rb.reward_errors["http_reward"][0].startswith("error: ")
    if reason:
        assert reason in rb.reward_errors["http_reward"][0]


def test_a_dead_url_is_a_recorded_error_or_stops_the_run():
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    cfg = [RewardConfig(name="http_reward", args={"url": dead, "retries": 1, "backoff": 0.05}),
           RewardConfig(name="think_format")]
    with Scorer(cfg, ScoringConfig(workers=0, on_error="exclude")) as scorer:
        rb = scorer.score(["<think>a</think>b", "c"])
    assert rb.reward == [None, None] and rb.rewards["think_format"] == [1.0, 0.0]
    assert "could not reach http://127.0.0.1:9/score" in rb.reward_errors["http_reward"][0]
    with Scorer(cfg, ScoringConfig(workers=0, on_error="zero")) as scorer:
        assert scorer.score(["<think>a</think>b", "c"]).reward == [1.0, 0.0]  # counted as 0, and recorded
    with Scorer(cfg, ScoringConfig(workers=0, on_error="fail")) as scorer, \
            pytest.raises(RewardFailure, match="reward 'http_reward' failed on completion 0"):
        scorer.score(["<think>a</think>b", "c"])


@pytest.mark.parametrize("args, reason", [
    ({}, "the setting 'url' is required"),
    ({"url": "http://x", "timeout": 0}, "'timeout' must be a positive number"),
    ({"url": "http://x", "retries": -1}, "'retries' must be an integer >= 0"),
    ({"url": "http://x", "concurrency": 0}, "'concurrency' must be an integer >= 1"),
    ({"url": "http://x", "batch_size": 0}, "'batch_size' must be an integer >= 1"),
    ({"url": "http://x", "on_item_error": "zero"}, "on_item_error='zero'; valid: fail, server"),
])
def test_bad_settings_name_the_setting(args, reason):
    with pytest.raises(ValueError, match=reason):
        asyncio.run(http_reward(["a"], **args))


def test_serve_reward_cli_errors(capsys, monkeypatch):
    assert main(["serve-reward", "--reward", "no_such_reward"]) == 2
    assert "grpo-kit serve-reward: error: unknown reward 'no_such_reward'" in capsys.readouterr().err
    monkeypatch.delenv("UNSET_VAR_X", raising=False)
    assert main(["serve-reward", "--token-env", "UNSET_VAR_X", "--reward", "think_format", "--workers", "0",
                 "--port", "0"]) == 2
    assert "environment variable UNSET_VAR_X is empty or unset" in capsys.readouterr().err
    assert main(["serve-reward", "--reward", "think_format", "--max-queue", "-1"]) == 2
    assert "server.max_queue: Input should be greater than or equal to 0" in capsys.readouterr().err


def test_the_readme_server_config_is_valid():
    import re

    import yaml

    from grpo_kit.config import build_config
    from grpo_kit.serve_reward import ServeConfig

    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)]
    served = [b for b in blocks if isinstance(b, dict) and "server" in b]
    assert served, "the README's Remote rewards section has no serve-reward config"
    for b in served:
        cfg = build_config(b, ServeConfig, "README")
        assert cfg.server.token_env == "REWARD_TOKEN" and cfg.rewards[0].name == "reward_model"
