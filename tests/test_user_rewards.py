"""Users' reward functions, written as TRL users write them (tests/trl_style_rewards.py), run
unchanged through `grpo-kit score --reward FILE:fn` and `grpo-kit train`; a batch-comparing reward
left at the default item scope is detected and warned about, and `scope:` fixes it.

The expected values are the functions' own outputs when called the way TRL calls them (once on the
batch, or once per group for `scope: group`), so the check is against TRL's semantics, not ours.
"""

import json
import math

import pytest
import yaml

from grpo_kit.cli import main
from grpo_kit.train.logger import read_metrics
from tests import trl_style_rewards as trl
from tests.conftest import ROOT

FILE = ROOT / "tests" / "trl_style_rewards.py"
ITEM_WISE = ["format_reward", "accuracy_reward", "length_cap", "token_count_reward", "async_digit_reward"]


def spec(fn: str) -> str:
    return f"{FILE}:{fn}"


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


ROWS = [  # two prompts x three completions; completion_ids as a trainer would pass them
    {"prompt": [{"role": "user", "content": "3+5="}], "completion": chat(c), "solution": "8",
     "completion_ids": ids}
    for c, ids in (("8", [10]), ("18", [3, 10]), ("x9", [5, 5, 5]))
] + [
    {"prompt": [{"role": "user", "content": "2+2="}], "completion": chat(c), "solution": "4",
     "completion_ids": ids}
    for c, ids in (("4", [6]), ("44", [6, 6]), ("4444", [6, 6, 6, 6]))
]


def trl_call(fn_name: str, rows: list[dict]) -> list:
    """The function called once on ``rows``, as TRL's trainer calls a reward on its batch."""
    fn = getattr(trl, fn_name)
    cols = {k: [r[k] for r in rows] for k in ("solution", "completion_ids", "prompt")}
    out = fn([r["completion"] for r in rows], prompts=cols["prompt"], **cols)
    if hasattr(out, "__await__"):
        import asyncio

        out = asyncio.run(out)
    return out


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One `grpo-kit score` run over every reward: the item-wise ones, len_reward at the default
    scope and with `scope: group` and `scope: batch`."""
    d = tmp_path_factory.mktemp("score")
    inp = d / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    rewards = [{"name": spec(f), "label": f} for f in ITEM_WISE]
    rewards += [{"name": spec("len_reward"), "label": "len_default"},
                {"name": spec("len_reward"), "label": "len_group", "scope": "group"},
                {"name": spec("len_reward"), "label": "len_batch", "scope": "batch"}]
    cfg = d / "score.yaml"
    cfg.write_text(yaml.safe_dump({"rewards": rewards, "scoring": {"workers": 1, "timeout": 30}}))
    out = d / "out.jsonl"
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "grpo_kit.cli", "score", str(inp), "-o", str(out), "--config",
                          str(cfg), "--no-progress"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in out.read_text().splitlines()], run.stderr


@pytest.mark.parametrize("fn", ITEM_WISE)
def test_trl_style_reward_scores_a_file_as_trl_would(scored, fn):
    rows, _ = scored
    assert [r["rewards"][fn] for r in rows] == trl_call(fn, ROWS)
    assert not any(fn in (r.get("reward_errors") or {}) for r in rows)


def test_a_batch_comparing_reward_is_detected_and_scope_fixes_it(scored):
    rows, err = scored
    assert "reward 'len_default' scores a group of 3 completions differently" in err
    assert "set `scope: group`" in err
    assert not any(f"'{k}'" in err for k in ("len_group", "len_batch", *ITEM_WISE))  # no false alarm
    assert [r["rewards"]["len_default"] for r in rows] == [0.0] * 6  # one at a time: no lengths to compare
    per_group = trl_call("len_reward", ROWS[:3]) + trl_call("len_reward", ROWS[3:])
    assert [r["rewards"]["len_group"] for r in rows] == per_group
    assert [r["rewards"]["len_batch"] for r in rows] == trl_call("len_reward", ROWS)
    assert per_group != [0.0] * 6 and per_group != trl_call("len_reward", ROWS)  # the three really differ


def test_trl_style_rewards_train_unchanged(tmp_path):
    """Two training steps with every TRL-style reward on a chat-prompt task: each is called, none
    fails, and the chat completions reach them as [{"role": "assistant", "content": ...}]."""
    from grpo_kit.demo import build_tiny_model

    model = build_tiny_model(tmp_path / "model", seed=0, warm_start_steps=30)
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"question": f"{a}+{b}=", "solution": str(a + b)}) + "\n"
                            for a in range(10) for b in range(10)))
    rewards = [{"name": spec(f), "label": f} for f in ITEM_WISE] + [
        {"name": spec("len_reward"), "label": "len_reward", "scope": "group"}]
    cfg = {"model": {"path": str(model)},
           "task": {"dataset": str(data), "question_column": "question", "answer_column": "solution",
                    "prompt_style": "chat", "system_prompt": "", "template": "{question}"},
           "rewards": rewards, "sampling": {"n": 4, "max_new_tokens": 3},
           "scoring": {"workers": 1, "timeout": 30},
           "train": {"steps": 2, "prompts_per_step": 4, "samples_every": 1, "torch_threads": 1},
           "run": {"progress": False}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--output-dir", str(tmp_path / "run")]) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == 2
    for name in [*ITEM_WISE, "len_reward"]:
        assert rows[-1][f"rewards/{name}/errors"] == 0 and rows[-1][f"rewards/{name}/timeouts"] == 0, name
        assert math.isfinite(rows[-1][f"rewards/{name}/mean"]), name
    sample = json.loads((tmp_path / "run" / "samples" / "step-000002.jsonl").read_text().splitlines()[0])
    assert sample["completion"][0]["role"] == "assistant"
    assert sample["rewards"]["token_count_reward"] > 0  # completion_ids reached it
