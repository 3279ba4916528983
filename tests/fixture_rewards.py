"""User-style reward functions for the scorer tests: well-behaved ones and hostile ones."""

import os
import time


def text_length(completions, **columns):
    """A TRL-style reward: the number of characters."""
    return [float(len(c if isinstance(c, str) else c[0]["content"])) for c in completions]


def answer_match(completions, answer):
    """A fixed signature (no **kwargs): the scorer must pass only `answer`."""
    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]


def trl_chat_length(completions, **kwargs):
    """TRL's chat convention: completion[0]["content"]."""
    return [float(len(c[0]["content"])) for c in completions]


def hostile(completions, **columns):
    """Misbehaves on command: SLEEP hangs in Python, POW hangs in C, CRASH raises, DIE kills the
    process, NAN returns NaN, NONE says not applicable."""
    out = []
    for c in completions:
        if "SLEEP" in c:
            time.sleep(1000)
        if "POW" in c:
            pow(9, 9 ** 9)  # minutes of C-level big-int work: no signal can stop it
        if "CRASH" in c:
            raise ValueError("boom")
        if "DIE" in c:
            os._exit(3)
        if "NAN" in c:
            out.append(float("nan"))
        elif "NONE" in c:
            out.append(None)
        else:
            out.append(1.0)
    return out


def wrong_length(completions, **columns):
    return [1.0] * (len(completions) + 1)


def slow(completions, **columns):
    """20 ms per completion: slow enough to SIGKILL a run midway."""
    time.sleep(0.02 * len(completions))
    return [float(len(c)) for c in completions]


def with_setting(completions, *, bonus=0.0, **columns):
    return [1.0 + bonus for _ in completions]


def with_list_setting(completions, *, words=("a",), weights=None, **columns):
    """A setting that is a list (and one that is a dict): how many of ``words`` each completion holds."""
    w = weights or {}
    return [float(sum(w.get(x, 1.0) for x in words if x in c)) for c in completions]


def length_penalty_that_hangs(completions, **columns):
    """A penalty reward (-0.1 per character) that hangs on a completion containing SLEEP: a
    timeout must not turn into 'no penalty'."""
    out = []
    for c in completions:
        if "SLEEP" in c:
            time.sleep(1000)
        out.append(-0.1 * len(c))
    return out


def fails_on_digit_one(completions, **columns):
    """Raises on any completion containing the digit 1, scores 1.0 otherwise."""
    if any("1" in c for c in completions):
        raise ValueError("a one")
    return [1.0] * len(completions)


def constant(completions, **columns):
    """The same reward for everything: no group variance."""
    return [1.0] * len(completions)


def fails_on_rank_one(completions, **columns):
    """Raises in the scoring workers of rank 1 of a torchrun job (RANK is inherited from it)."""
    import os

    if os.environ.get("RANK") == "1":
        raise RuntimeError("this reward fails on rank 1")
    return [float(len(c)) for c in completions]


def hangs_on_rank_one(completions, **columns):
    """Sleeps 120 s in the scoring workers of rank 1 of a torchrun job: a rank that is stuck, not dead."""
    import os

    if os.environ.get("RANK") == "1":
        time.sleep(120)
    return [float(len(c)) for c in completions]
