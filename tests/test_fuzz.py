"""Hostile and random completions never crash the scorer, never overrun the timeout by more than
1 s, and never execute anything (the payloads below would create a file if they ran)."""

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpo_kit.workers import WorkerPool

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
# every built-in reward that runs in workers, with the columns it reads
REWARDS = [
    ("math_accuracy", {"answer": ["42"]}),
    ("math_accuracy", {"answer": ["\\frac{1}{2}"]}),
    ("countdown", {"nums": [[3, 5, 7]], "target": [22]}),
    ("think_format", {}), ("r1_format", {}), ("tag_count", {}),
    ("length_limit", {}), ("repetition_penalty", {}),
]
SETTINGS = {"length_limit": (("max_length", 100),)}


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(2) as p:
        yield p


def run_all(pool, text):
    tasks = [((name, SETTINGS.get(name, ())), [text], cols, TIMEOUT) for name, cols in REWARDS]
    t0 = time.monotonic()
    outs = pool.run(tasks)
    return outs, time.monotonic() - t0


def check(outs, text):
    for (name, _), o in zip(REWARDS, outs):
        # a built-in reward never raises on model text: it scores it, or (hostile input) times out
        assert o.status in ("ok", "timeout"), f"{name} on {text[:80]!r}: {o.reason}"
        assert o.seconds <= TIMEOUT + 1.0, f"{name} took {o.seconds:.2f} s"
        if o.status == "ok":
            assert all(v is None or isinstance(v, float) for v in o.values)
    assert not SENTINEL.exists(), "a payload was executed"


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: f"{t[:20]!r}x{len(t)}")
def test_hostile_inputs(pool, text):
    SENTINEL.unlink(missing_ok=True)
    outs, _ = run_all(pool, text)
    check(outs, text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    st.text(max_size=300),
))
def test_random_strings(pool, text):
    SENTINEL.unlink(missing_ok=True)
    outs, _ = run_all(pool, text)
    check(outs, text)
