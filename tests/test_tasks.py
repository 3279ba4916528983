"""Tasks: procedural ones are deterministic and correct, hub-shaped ones load from local files,
YAML-defined tasks work, and config mistakes give clear errors."""

import json
from fractions import Fraction
from itertools import permutations

import pytest

from grpo_kit.config import ConfigError, build_config, load_config_text
from rewards.countdown import countdown, evaluate
from tasks import TASKS, TaskConfig, get_task
from tasks.templates import R1_SYSTEM_PROMPT


def load(split="train", **cfg):
    return get_task(TaskConfig(**cfg)).load(split)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ----------------------------------------------------------------------------- arithmetic


def test_arithmetic_default_is_the_100_facts():
    task = get_task(TaskConfig(name="arithmetic"))
    train, test = task.load("train"), task.load("test")
    assert len(train) == 100 and train["prompt"] == test["prompt"]  # memorisation demo: same facts
    row = train[3 * 10 + 5]
    assert (row["prompt"], row["answer"]) == ("3+5=", "8")  # raw style: no R1 template
    assert [(r.name, r.weight) for r in task.default_rewards] == [("exact_match", 1.0)]


def test_arithmetic_sample_is_seeded():
    args = {"max_operand": 999, "ops": ["+", "-"], "max_examples": 50}
    a = load(name="arithmetic", args={**args, "seed": 1})
    assert a["prompt"] == load(name="arithmetic", args={**args, "seed": 1})["prompt"]  # same seed
    assert a["prompt"] != load(name="arithmetic", args={**args, "seed": 2})["prompt"]  # other seed
    for row in a:  # every answer is right and never negative
        lhs = row["prompt"][:-1]
        op = "+" if "+" in lhs else "-"
        x, y = map(int, lhs.split(op))
        assert int(row["answer"]) == (x + y if op == "+" else x - y) >= 0


# ----------------------------------------------------------------------------- countdown


def solvable(nums, target):
    """Brute force: can ``nums`` (each once) make ``target`` with + - * / ?"""
    def reach(values):
        if len(values) == 1:
            return values[0] == target
        for i, j in permutations(range(len(values)), 2):
            x, y = values[i], values[j]
            rest = [v for k, v in enumerate(values) if k not in (i, j)]
            results = [x + y, x - y, x * y] + ([x / y] if y != 0 else [])
            if any(reach(rest + [r]) for r in results):
                return True
        return False

    return reach([Fraction(n) for n in nums])


COUNTDOWN = {"name": "countdown", "args": {"n_train": 200, "n_test": 40, "seed": 3}}


def test_countdown_deterministic_and_seeded():
    a = load(**COUNTDOWN)
    assert a.to_list() == load(**COUNTDOWN).to_list()
    other = load(**{**COUNTDOWN, "args": {**COUNTDOWN["args"], "seed": 4}})
    assert a["nums"] != other["nums"]


def test_countdown_rows_are_solvable_and_in_range():
    rows = load("test", **COUNTDOWN).to_list()
    assert len(rows) == 40
    for row in rows:
        assert 3 <= len(row["nums"]) <= 4 and all(1 <= n <= 99 for n in row["nums"])
        assert 1 <= row["target"] <= 1000
        assert solvable(row["nums"], row["target"]), row
        value, literals = evaluate(row["answer"])  # the reference equation uses each number once
        assert value == row["target"] and sorted(literals) == sorted(row["nums"])
        assert str(row["nums"]) in row["prompt"] and row["prompt"].endswith("Assistant: <think>")
    # the task's own reward accepts the reference equation
    scores = countdown([f"...</think> <answer>{r['answer']}</answer>" for r in rows],
                       nums=[r["nums"] for r in rows], target=[r["target"] for r in rows])
    assert scores == [1.0] * len(rows)


def test_countdown_splits_are_disjoint():
    key = lambda r: (tuple(sorted(r["nums"])), r["target"])  # noqa: E731
    train = {key(r) for r in load("train", **COUNTDOWN)}
    test = {key(r) for r in load("test", **COUNTDOWN)}
    assert len(train) == 200 and len(test) == 40 and not train & test


def test_countdown_default_rewards():
    task = get_task(TaskConfig(name="countdown"))
    assert [(r.name, r.weight, r.args) for r in task.default_rewards] == [("countdown", 1.0, {"format_score": 0.1})]


# ----------------------------------------------------------------------------- gsm8k and math


GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 friends. How many?", "answer": "48 + 24 = 72\n#### 72"},
    {"question": "A big number?", "answer": "1000 + 72 = 1072\n#### 1,072"},
]


def test_gsm8k_from_local_files_shaped_like_the_hub(tmp_path):
    write_jsonl(tmp_path / "gsm8k_train.jsonl", GSM8K_ROWS)
    write_jsonl(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS[:1])
    task = get_task(TaskConfig(name="gsm8k", args={"dataset": str(tmp_path / "gsm8k_{split}.jsonl")}))
    train = task.load("train")
    assert train["answer"] == ["72", "1072"]  # the number after ####, commas removed
    assert train["solution"][1] == GSM8K_ROWS[1]["answer"]  # the worked solution is kept
    assert train["prompt"][0].startswith("A conversation between User and Assistant.")
    assert train["prompt"][0].endswith("User: Natalia sold clips to 48 friends. How many?. Assistant: <think>")
    assert len(task.load("test")) == 1
    rewards = [(r.name, r.weight, r.args) for r in task.default_rewards]
    assert rewards == [("math_accuracy", 1.0, {"fallback": "last_number"}),  # as GSM8K scorers read
                       ("think_format", 0.5, {"prompt_has_think_open": True})]


def test_gsm8k_chat_style(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    task = get_task(TaskConfig(name="gsm8k", prompt_style="chat", args={"dataset": path}))
    assert task.load("train")[0]["prompt"] == [
        {"role": "system", "content": R1_SYSTEM_PROMPT},
        {"role": "user", "content": GSM8K_ROWS[0]["question"]},
    ]
    assert task.default_rewards[1].args == {"prompt_has_think_open": False}  # the model opens <think>
    assert task.splits == ("train",)  # one file: no test split
    with pytest.raises(ConfigError, match="has no split 'test'; its splits: train"):
        task.load("test")


def test_math_answer_column_or_boxed_solution(tmp_path):
    import datasets

    math500 = tmp_path / "math500.parquet"  # MATH-500 layout: problem, solution, answer
    datasets.Dataset.from_list([{"problem": "1/2?", "solution": "...", "answer": "\\frac{1}{2}", "level": 1}]
                               ).to_parquet(str(math500))
    assert load(name="math", args={"dataset": str(math500)})["answer"] == ["\\frac{1}{2}"]
    original = tmp_path / "math_train.jsonl"  # original MATH layout: the gold is the last \boxed{}
    write_jsonl(original, [
        {"problem": "p1", "solution": "first \\boxed{1}, then $\\boxed{\\frac{1}{2}}$."},
        {"problem": "p2", "solution": "no boxed answer here"},  # dropped: no gold
    ])
    rows = load(name="math", args={"dataset": str(original)})
    assert rows["answer"] == ["\\frac{1}{2}"] and rows["question"] == ["p1"]


def test_math_without_needed_columns(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(ConfigError, match="needs a 'problem' column.*its columns: question, answer"):
        load(name="math", args={"dataset": path})


# ----------------------------------------------------------------------------- YAML-defined tasks


def test_yaml_task_from_a_save_to_disk_folder(tmp_path):
    import datasets

    rows = [{"problem": "2+2?", "gold": 4, "level": "easy"}, {"problem": "3+3?", "gold": 6, "level": "easy"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "validation": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "ds"))
    cfg = load_config_text(f"""
dataset: {tmp_path / "ds"}
test_split: validation
question_column: problem
answer_column: gold
template: "Q ({{level}}): {{question}}\\nA:"
prompt_style: raw
limit: 1
rewards:
  - {{name: math_accuracy, weight: 2.0}}
""", TaskConfig)
    task = get_task(cfg)
    train = task.load("train")
    assert len(train) == 1  # limit
    assert train[0]["prompt"] == "Q (easy): 2+2?\nA:" and train[0]["answer"] == 4
    assert len(task.load("test")) == 1
    assert [(r.name, r.weight) for r in task.default_rewards] == [("math_accuracy", 2.0)]


def test_yaml_task_default_prompt_and_rewards(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "What is 6*7", "answer": "42"}])
    task = get_task(load_config_text(f"dataset: {path}", TaskConfig))
    assert task.load("train")[0]["prompt"].endswith("User: What is 6*7. Assistant: <think>")
    assert [r.name for r in task.default_rewards] == ["math_accuracy", "think_format"]


def test_missing_column_names_it_and_the_columns_present(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"problem": "p", "solution": "s"}])
    task = get_task(TaskConfig(dataset=path, answer_column="solution"))
    with pytest.raises(ConfigError, match=r"no column 'question' \(question_column\); its columns: problem, solution"):
        task.load("train")
    task = get_task(TaskConfig(dataset=path, question_column="problem", answer_column="solution",
                               template="{problem} [{level}]"))
    with pytest.raises(ConfigError, match="no column 'level' \\(a placeholder of the template\\)"):
        task.load("train")


# ----------------------------------------------------------------------------- config errors


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown task 'gsm9k'; known tasks: arithmetic, countdown, gsm8k, math"):
        build_config({"name": "gsm9k"}, TaskConfig)
    with pytest.raises(ConfigError, match="known tasks: " + ", ".join(sorted(TASKS))):
        get_task(TaskConfig.model_construct(name="gsm9k", dataset=None))


@pytest.mark.parametrize("data,message", [
    ({}, "either `name`"),  # neither name nor dataset
    ({"name": "math", "dataset": "x.jsonl"}, "not both"),  # both
    ({"name": "gsm8k", "question_column": "q"}, "question_column: only for a `dataset` task"),  # dataset-only field
    ({"dataset": "x.jsonl", "args": {"seed": 1}}, "a `dataset` task has none"),  # args without a built-in
    ({"name": "countdown", "args": {"n_trian": 5}}, "did you mean 'n_train'"),  # typo in a built-in's args
    ({"name": "arithmetic", "args": {"ops": ["/"]}}, "ops.0"),  # invalid arg value, with its key
    ({"name": "gsm8k", "prompt_style": "base", "system_prompt": "hi"}, "system_prompt only applies"),
    ({"name": "arithmetic", "system_prompt": "hi"}, "system_prompt only applies"),  # arithmetic is raw
    ({"name": "math", "limit": 0}, "limit"),  # limit >= 1
    ({"name": "math", "prompt_style": "instruct"}, "prompt_style"),  # unknown style
])
def test_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        build_config(data, TaskConfig)


def test_bad_template_is_a_config_error(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ConfigError, match="placeholders must name a column"):
        get_task(TaskConfig(dataset=path, template="{} and {question}")).load("train")
