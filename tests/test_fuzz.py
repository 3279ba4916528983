"""Hostile and random completions never crash any registered reward, never overrun the timeout by
more than 1 s, and never execute anything (the payloads below would create a file if they ran)."""

import asyncio
import inspect
import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpo_kit.registry import get_reward, known_rewards, reward_scope
from grpo_kit.workers import Outcome, WorkerPool
from tests.http_stub import Stub

TIMEOUT = 2.0
SENTINEL = Path("/tmp/grpo_kit_fuzz_pwned")
PAYLOADS = [
    f"__import__('os').system('touch {SENTINEL}')",
    f"\\boxed{{__import__('pathlib').Path('{SENTINEL}').touch()}}",
    f"<answer>exec(\"open('{SENTINEL}','w')\")</answer>",
    "<answer>lambda: 0</answer>", "\\boxed{import os}", "#### eval('1')",
]
FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "\n", "\\boxed{", "}", "{", "\\frac{", "\\sqrt[",
    "^{", "9", "1", "0", ".", ",", "(", ")", "[", "]", "\\{", "\\}", "x", "=", "+", "-", "*", "/", "e",
    "\\pi", "i", "\\infty", "\\cup", "\\begin{pmatrix}", "&", "\\\\", "\\end{pmatrix}", "\\%", "\\$",
    "\\text{", "#### ", "The answer is ", "^\\circ", "\\log_", "\\ln", "\\times10^{", "e9999", " ",
    "\\left(", "\\right)", "\\dfrac", "\\,", "{,}", "_", "\x00", "\ud7ff", "é", "∞", *PAYLOADS,
]
HOSTILE = [
    "(" * 10_000 + "1" + ")" * 10_000,
    "\\boxed{" + "(" * 10_000 + "}",
    "<answer>9^{9^{9^9}}</answer>", "\\boxed{9^{9^{9^{9}}}}", "\\boxed{10^{10^{10^{10}}}!}",
    "<answer>" + "1" * 1_000_000 + "</answer>",
    "<think>" + "a " * 500_000 + "</think><answer>1</answer>",
    "\\boxed{" * 50_000,
    "<answer>" + "1+" * 200_000 + "1</answer>",
    "\\frac{" * 5_000 + "1" + "}{2}" * 5_000,
    "x" * 1_000_000,
    *PAYLOADS,
]
# Every reward in the registry is fuzzed: the columns it reads and the settings it requires, one
# or more cases per name. A reward registered without an entry here fails test_every_reward_is_fuzzed.
CASES: dict[str, list[tuple[dict, dict]]] = {
    "math_accuracy": [({"answer": ["42"]}, {}), ({"answer": ["\\frac{1}{2}"]}, {})],
    "countdown": [({"nums": [[3, 5, 7]], "target": [22]}, {})],
    "exact_match": [({"answer": ["42"]}, {})],
    "tool_answer": [({"answer": ["42"]}, {}),
                    ({"answer": ["42"], "tool_calls": [[{"tool": "calculator", "call": "6*7", "status": "ok",
                                                         "output": "42"}]]}, {"require_call": True})],
    "tool_failures": [({"tool_calls": [[{"tool": "python", "call": "x", "status": "timeout", "output": ""}]]}, {})],
    "think_format": [({}, {})],
    "r1_format": [({}, {})],
    "tag_count": [({}, {})],
    "regex_format": [({}, {"pattern": r"<think>.*?</think>\s*<answer>\s*(-?\d+)\s*</answer>"})],
    "length_limit": [({}, {"max_length": 100})],
    "overlong_punishment": [({}, {"max_length": 100, "cache_length": 20})],
    "cosine_length": [({"answer": ["42"]}, {"max_length": 100})],  # correctness by math_accuracy
    "kimi_length_penalty": [({"answer": ["42"]}, {})],  # group scope: a group of 3, see below
    "repetition_penalty": [({}, {})],
    "reward_model": [({"prompt": ["what is 2 + 2 ?"]}, {"max_length": 64})],  # "model": the fixture's
    "process_reward": [({"prompt": ["what is 2 + 2 ?"]}, {"step_tag": " ки\n", "max_length": 64})],  # a tiny PRM
    # the remote rewards: the text through JSON and HTTP to a stub server ("url": the stub's, see run_all)
    "http_reward": [({"answer": ["42"], "prompt": ["what is 2 + 2 ?"]}, {"retries": 0})],
    "llm_judge": [({"answer": ["42"], "prompt": ["what is 2 + 2 ?"]}, {"retries": 0, "model": "judge"})],
}


def _rg_case(dataset: str) -> tuple[dict, dict]:
    """One generated reasoning-gym row of ``dataset`` as the reward's columns."""
    from tasks.reasoning_gym import ReasoningGymArgs, generate

    row = generate(ReasoningGymArgs(dataset=dataset, size=1, test_size=1), "train")[0]
    return {k: [row[k]] for k in ("rg_dataset", "rg_entry", "rg_config")}, {}


# one dataset per policy of the audit: allowed as it is, our countdown parser, our literal parser,
# our polynomial parser
CASES["reasoning_gym"] = [_rg_case(d) for d in ("leg_counting", "countdown", "n_queens", "polynomial_multiplication")]
GROUP = 3  # completions per group for group-scope rewards: the text, its first half, a short answer


def group_of(text: str) -> list[str]:
    return [text, text[: len(text) // 2], "<answer>42</answer>"]


def test_every_reward_is_fuzzed():
    assert set(known_rewards()) - set(CASES) == set(), "registered rewards without a fuzz case"
    assert set(CASES) - set(known_rewards()) == set(), "fuzz cases of rewards that are not registered"


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(2) as p:
        yield p


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """reward_model's checkpoint: a tiny sequence classifier built locally (tests/tiny_models.py)."""
    pytest.importorskip("transformers")
    from tiny_models import build_tiny_classifier

    return str(build_tiny_classifier(tmp_path_factory.mktemp("fuzz_rm")))


@pytest.fixture(scope="module")
def stub():
    """A server for the remote rewards: a reward server's answer on /score, a judge's on /chat/completions."""
    def answer(path, body, headers):
        if path.endswith("/chat/completions"):
            return 200, {"choices": [{"message": {"content": "SCORE: 5"}, "finish_reason": "stop"}]}, {}
        n = len(body["completions"])
        return 200, {"rewards": {"r": [1.0] * n}, "reward_errors": {"r": [None] * n}, "reward": [1.0] * n}, {}

    with Stub() as s:
        s.handler = answer
        yield s


def prm_beside(classifier: str) -> str:
    """process_reward's checkpoint: a tiny PRM (tests/tiny_models.py) built once beside the classifier."""
    from tiny_models import build_tiny_prm

    path = Path(classifier).parent / "prm"
    if not (path / "config.json").exists():
        build_tiny_prm(path)
    return str(path)


def run_all(pool, classifier, stub, text):
    """``[(name, outcome)]`` for every case of every registered reward: item and group scopes in the
    worker pool under the hard timeout (x group size for a group), batch scope in-process, as the
    scorer runs them."""
    tasks, names, in_process = [], [], []
    for name in known_rewards():
        if name not in CASES:
            pytest.fail(f"reward {name!r} is registered but has no fuzz case in CASES")
        scope = reward_scope(get_reward(name))
        for cols, settings in CASES[name]:
            if scope == "batch":
                in_process.append((name, cols, settings))
                continue
            texts = group_of(text) if scope == "group" else [text]
            cols = {k: v * len(texts) for k, v in cols.items()}
            tasks.append(((name, tuple(sorted(settings.items()))), texts, cols, TIMEOUT * len(texts)))
            names.append(name)
    results = list(zip(names, pool.run(tasks)))
    for name, cols, settings in in_process:
        t0 = time.monotonic()
        try:
            if name in ("http_reward", "llm_judge"):
                where = {"url": stub.url}
            else:
                where = {"model": prm_beside(classifier) if name == "process_reward" else classifier}
            values = get_reward(name)([text], **cols, **settings, **where)
            if inspect.isawaitable(values):  # an async reward, awaited as the scorer does
                values = asyncio.run(values)
            out = Outcome("ok", values)
        except Exception as e:  # reported by check() with the reward's name
            out = Outcome("error", reason=f"{type(e).__name__}: {e}")
        out.seconds = time.monotonic() - t0
        results.append((name, out))
    return results


def check(results, text):
    for name, o in results:
        # a built-in reward never raises on model text: it scores it, or (hostile input) times out
        assert o.status in ("ok", "timeout"), f"{name} on {text[:80]!r}: {o.reason}"
        assert o.seconds <= TIMEOUT * GROUP + 1.0, f"{name} took {o.seconds:.2f} s"
        if o.status == "ok":
            assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in o.values), (name, o.values)
    assert not SENTINEL.exists(), "a payload was executed"


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: f"{t[:20]!r}x{len(t)}")
def test_hostile_inputs(pool, classifier, stub, text):
    SENTINEL.unlink(missing_ok=True)
    check(run_all(pool, classifier, stub, text), text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    st.text(max_size=300),
))
def test_random_strings(pool, classifier, stub, text):
    SENTINEL.unlink(missing_ok=True)
    check(run_all(pool, classifier, stub, text), text)
