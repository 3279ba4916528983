"""reasoning-gym tasks and the reasoning_gym reward (issue 16): the scorer audit, the injection payload
through every dataset, our parsers against reasoning-gym's own scores, the unsafe_scorer switch, the
task's mix and errors, `grpo-kit score` end to end and two training steps on the stand-in model."""

import copy
import functools
import json
import os
import re
from collections import Counter

import pytest

reasoning_gym = pytest.importorskip("reasoning_gym")

from reasoning_gym.factory import DATASETS  # noqa: E402

from grpo_kit.config import ConfigError, build_config  # noqa: E402
from rewards import reasoning_gym as rgr  # noqa: E402
from rewards._literal import parse_literal  # noqa: E402
from rewards._rg_audit import audit  # noqa: E402
from tasks import TaskConfig, get_task  # noqa: E402

EVALUATING = {"countdown", "puzzle24", "simple_integration", "intermediate_integration", "polynomial_multiplication",
              "n_queens", "spiral_matrix", "string_insertion", "binary_matrix"}
"""The nine datasets whose scorer ran the issue's payload (sympy parse_expr, eval)."""


def answer_of(text: str) -> str:
    return f"<think>working</think><answer>{text}</answer>"


@functools.lru_cache(maxsize=None)
def _dataset(name: str, n: int, seed: int):
    return reasoning_gym.create_dataset(name, size=n, seed=seed)


def entries(name: str, n: int, seed: int = 0) -> list[dict]:
    """Generated once per test session (some datasets take a second to build): copies."""
    ds = _dataset(name, n, seed)
    return [copy.deepcopy(ds[i]) for i in range(n)]


# ------------------------------------------------------------------------------------------ audit
def test_every_dataset_has_exactly_one_policy():
    classes = [set(rgr.ALLOWED), set(rgr.REVIEWED), set(rgr.OURS), set(rgr.REFUSED)]
    assert sum(len(c) for c in classes) == len(set().union(*classes))  # disjoint
    assert set().union(*classes) == set(DATASETS)  # a new dataset fails here until it is classified


def test_the_source_walk_still_gives_the_allowlist():
    """Re-run the audit on the installed reasoning-gym: an allowed scorer must still be free of
    findings and have the audited digest; a changed scorer (new version) fails here."""
    for name, (cls, _) in DATASETS.items():
        result = audit(cls)
        if name in rgr.ALLOWED:
            assert result.safe, (name, result.findings)
            assert result.digest == rgr.ALLOWED[name], f"{name}: scorer changed since the audit; re-audit it"
        elif name in rgr.REVIEWED:
            assert result.digest == rgr.REVIEWED[name][0], f"{name}: reviewed scorer changed; review it again"
        else:  # ours or refused: the walk flags each, so none is allowed by mistake
            assert not result.safe, name
    assert EVALUATING <= set(rgr.OURS) | set(rgr.REFUSED)


# A made-up scorer module for the walk: its helpers live in this test module, so the walk follows it.
def _clean_helper(answer):
    return answer.strip().lower()


def _hidden_eval(answer):
    return _clean_helper(str(eval(answer)))  # the walk must see through the helper


class _Clean(reasoning_gym.dataset.ProceduralDataset):
    def __getitem__(self, idx):
        return {}

    def score_answer(self, answer, entry):
        return float(_clean_helper(answer) == entry["answer"])


class _Sneaky(_Clean):
    def score_answer(self, answer, entry):
        return float(_hidden_eval(answer) == entry["answer"])


class _Sympy(_Clean):
    def score_answer(self, answer, entry):
        import sympy

        return float(sympy.sympify(answer) == 1)


@pytest.mark.parametrize("cls, finding", [
    (_Clean, None),                          # only our helper and str methods: no finding
    (_Sneaky, "eval (builtin) in _hidden_eval"),  # eval two calls down
    (_Sympy, "import sympy"),                # any sympy use is a finding (sympify on a string)
])
def test_the_walk_follows_helpers_and_flags_evaluation(cls, finding):
    result = audit(cls, packages=frozenset({"reasoning_gym", __name__.split(".")[0]}))
    if finding is None:
        assert result.safe, result.findings
    else:
        assert any(finding in f for f in result.findings), result.findings
    assert audit(_Clean, frozenset({"reasoning_gym", __name__.split(".")[0]})).digest != \
        audit(_Sneaky, frozenset({"reasoning_gym", __name__.split(".")[0]})).digest


def test_a_changed_scorer_is_refused(monkeypatch):
    entry = entries("leg_counting", 1)[0]
    monkeypatch.setitem(rgr.ALLOWED, "leg_counting", "0" * 16)
    rgr._digest_error.cache_clear()
    try:
        with pytest.raises(rgr.RefusedScorer, match="'leg_counting': its scorer in reasoning-gym .* differs"):
            rgr.reasoning_gym([answer_of(entry["answer"])], rg_dataset=["leg_counting"],
                              rg_entry=[rgr.encode_entry(entry)])
    finally:
        rgr._digest_error.cache_clear()


# ------------------------------------------------------------------------------------- injection
def payloads(path: str) -> list[str]:
    touch = f"__import__('os').system('touch {path}')"
    return [touch, f"eval(\"{touch}\")", f"[{touch}]", f"[[{touch}]]", f"{touch} + 24", f"({touch}, 1)",
            f"open('{path}', 'w')", f"(lambda: __import__('subprocess').run(['touch', '{path}']))()",
            f"exec(\"open('{path}', 'w')\")", f"__import__('sympy').sympify(\"{touch}\")"]


def test_the_payload_through_every_dataset_creates_nothing(tmp_path):
    """Every dataset of the package, one entry each, ten payloads: nothing is created, the guard of
    the allowed scorers never fires (they do not even try), refused datasets raise naming themselves."""
    target = tmp_path / "PWNED"
    comps = [answer_of(p) for p in payloads(str(target))]
    seen = Counter()
    for name in sorted(DATASETS):
        entry = {"question": "q", "answer": "a", "metadata": {}} if name == "composite" else entries(name, 1)[0]
        cols = {"rg_dataset": [name] * len(comps), "rg_entry": [rgr.encode_entry(entry)] * len(comps)}
        try:
            rgr.reasoning_gym(comps, **cols)
            seen[rgr.policy(name)] += 1
        except rgr.RefusedScorer as e:
            assert f"'{name}' is refused" in str(e) and "unsafe_scorer" in str(e)
            seen["refused"] += 1
        except PermissionError as e:  # the guard fired: an allowed scorer tried to run something
            pytest.fail(f"{name}: {e}")
        except (ValueError, TypeError, KeyError, AttributeError):
            seen["failed"] += 1  # a scorer that raises on garbage: a recorded reward failure
        assert not target.exists(), name
    assert seen["refused"] == len(rgr.REFUSED) and seen["ours"] == len(rgr.OURS)
    assert sum(seen.values()) == len(DATASETS)


def test_the_guard_blocks_what_an_unaudited_scorer_tries(tmp_path):
    """reasoning-gym's own n_queens scorer evals the answer: unguarded it creates the file (the
    hole is real), under the guard it is blocked and reported, although its `except` swallows it."""
    ds = reasoning_gym.create_dataset("n_queens", size=1, seed=0)
    entry, target = ds[0], tmp_path / "F"
    ds.score_answer(f"__import__('os').system('touch {target}')", entry)
    assert target.exists()
    target.unlink()
    with pytest.raises(PermissionError, match="'n_queens' tried (compile|exec) of code from a string"):
        with rgr._guard("n_queens"):
            ds.score_answer(f"__import__('os').system('touch {target}')", entry)
    assert not target.exists()
    with pytest.raises(PermissionError, match="compile of code from a string"):  # a made-up file name
        with rgr._guard("n_queens"):
            exec(compile(f"open({str(target)!r}, 'w')", "/nowhere/real.py", "exec"))
    assert not target.exists()
    with rgr._guard("n_queens"):  # off again afterwards for the honest path
        assert ds.score_answer(entry["answer"], entry) == 1.0


def test_the_guard_is_on_for_allowed_scorers_in_the_reward(tmp_path, monkeypatch):
    """An allowed dataset whose scorer turned evil (its digest check bypassed here): the reward's call
    is guarded, the file is not created and the row fails instead of scoring."""
    target = tmp_path / "F"

    def evil(self, answer, entry):
        try:
            eval(answer)
        except Exception:
            pass
        return 1.0

    monkeypatch.setattr(rgr, "_digest_error", lambda name: None)
    monkeypatch.setattr(DATASETS["leg_counting"][0], "score_answer", evil)
    entry = entries("leg_counting", 1)[0]
    with pytest.raises(PermissionError, match="scorer of 'leg_counting' tried"):
        rgr.reasoning_gym([answer_of(f"__import__('os').system('touch {target}')")], rg_dataset=["leg_counting"],
                          rg_entry=[rgr.encode_entry(entry)])
    assert not target.exists()


# ------------------------------------------------------------------------------ our parsers agree
def _swap_op(expr: str) -> str:
    return expr.replace("+", "#").replace("-", "+").replace("#", "-") if ("+" in expr or "-" in expr) \
        else expr.replace("*", "+", 1)


def _honest(name: str, e: dict) -> list[str]:
    """Correct and wrong answers an honest model might give, in the forms the scorers accept."""
    gold = e["answer"]
    if name in ("countdown", "puzzle24"):
        return [gold, _swap_op(gold), gold + " + 1", "(" + gold + ") * 2", "no idea", "1 / 0"]
    if name == "n_queens":
        board = e["metadata"]["valid_answers"][0]
        rows = [r.split() for r in board.split("\n")]
        return [board, repr(rows), repr(rows[::-1]), board.replace("Q", "_", 1), "[[1, 2"]
    if name == "spiral_matrix":
        return [gold, repr([int(x) for x in gold.split()]), repr([int(x) for x in gold.split()][::-1]), "1 2"]
    if name == "string_insertion":
        return [gold, repr(list(gold)), repr(tuple(gold)), repr(list(gold[::-1])), gold + "A"]
    if name == "binary_matrix":
        grid = [[int(x) for x in row.split()] for row in gold.split("\n")]
        return [gold, repr(grid), repr(grid[::-1]), gold.replace("0", "1")]
    if name == "number_sorting":
        nums = parse_literal(gold)
        return [gold, json.dumps(nums), json.dumps(nums[::-1]), json.dumps([float(x) + 5 for x in nums]), "[1"]
    if name == "polynomial_multiplication":
        terms = gold.replace(" - ", " + -").split(" + ")
        return [gold, " + ".join(reversed(terms)), gold + " + 1", gold.replace("*", "*2*", 1),
                gold + " + 0*x", gold.replace("**", "*", 1)]
    if name == "simple_integration":
        core, var = gold.replace(" + C", ""), e["metadata"]["variable"]
        terms = core.replace(" - ", " + -").split(" + ")
        return [gold, core, " + ".join(reversed(terms)) + " + C", gold + " + " + var, core + " + 7",
                gold.replace("*", "*2*", 1), gold.replace("/", "*", 1)]
    if name == "bitwise_arithmetic":
        v = int(gold, 0)
        return [gold, str(v), hex(v + 1), bin(v), "0xZZ"]
    raise AssertionError(name)


def test_our_scorers_agree_with_reasoning_gym_on_honest_answers():
    """Twelve entries per dataset at two seeds; reasoning-gym's own scorer (run here on our honest
    strings, never on model output) gives the reference. puzzle24 is stricter on purpose (the
    puzzle's own numbers, a value of exactly 24): wrong answers there may only score lower."""
    compared = Counter()
    for name in sorted(rgr.OURS):
        for seed in (0, 1):
            ds = reasoning_gym.create_dataset(name, size=6, seed=seed)
            for i in range(6):
                e = ds[i]
                for ans in _honest(name, e):
                    theirs = ds.score_answer(ans, e)
                    ours = rgr.score_answer(name, ans, rgr.decode_entry(rgr.encode_entry(e)))
                    if name == "puzzle24" and ours != theirs:
                        assert ours < theirs and ans != e["answer"], (ans, ours, theirs)
                    else:
                        assert ours == pytest.approx(theirs), (name, ans, ours, theirs)
                    compared[(name, ours == 1.0)] += 1
    for name in rgr.OURS:  # both a correct and a wrong answer compared for each
        assert compared[(name, True)] >= 12 and compared[(name, False)] >= 12, name


def test_json_round_trip_keeps_the_scores_of_allowed_datasets():
    """The entry travels as JSON (rg_entry); arc's boards are tuples, which plain JSON would turn into
    lists (and every gold answer into 0.05)."""
    for name in ("arc_agi",):  # rearc's scorer is the same code
        e = entries(name, 1)[0]
        ds = _dataset(name, 1, 0)
        if e["answer"] is None:
            continue
        assert rgr.score_answer(name, e["answer"], rgr.decode_entry(rgr.encode_entry(e))) == \
            ds.score_answer(e["answer"], e) == 1.0, name


# ------------------------------------------------------------------------------- unsafe_scorer
def test_unsafe_scorer_runs_only_in_a_reward_worker():
    """Outside a worker (scoring.workers: 0, or a direct call) even the opt-in refuses; in a worker
    it runs (test_three_safe_datasets_score_end_to_end_...)."""
    e = entries("intermediate_integration", 1)[0]
    cols = {"rg_dataset": ["intermediate_integration"], "rg_entry": [rgr.encode_entry(e)]}
    with pytest.raises(rgr.RefusedScorer, match="only in a reward worker process"):
        rgr.reasoning_gym([answer_of(e["answer"])], **cols, unsafe_scorer=True)


# ------------------------------------------------------------------------------------------ task
def test_a_weighted_mix_gives_each_dataset_its_share():
    task = get_task(TaskConfig(name="reasoning_gym", args={
        "size": 40, "test_size": 10, "seed": 3,
        "datasets": [{"name": "chain_sum", "weight": 3}, {"name": "leg_counting"},
                     {"name": "countdown", "config": {"min_numbers": 3, "max_numbers": 3}}]}))
    train, test = task.load("train"), task.load("test")
    assert Counter(train["rg_dataset"]) == {"chain_sum": 24, "leg_counting": 8, "countdown": 8}
    assert Counter(test["rg_dataset"]) == {"chain_sum": 6, "leg_counting": 2, "countdown": 2}
    assert not set(train["question"]) & set(test["question"])
    assert train["rg_dataset"][:5] != sorted(train["rg_dataset"][:5]) or len(set(train["rg_dataset"][:8])) > 1
    countdown = [r for r in train if r["rg_dataset"] == "countdown"]
    assert all(len(json.loads(r["rg_entry"])["metadata"]["numbers"]) == 3 for r in countdown)  # config used
    assert [(r.key, r.args) for r in task.default_rewards] == [
        ("rg_chain_sum", {"dataset": "chain_sum"}), ("rg_leg_counting", {"dataset": "leg_counting"}),
        ("rg_countdown", {"dataset": "countdown"})]
    assert train[0]["prompt"].endswith("Assistant: <think>")  # the R1-Zero prompt around the question


@pytest.mark.parametrize("args, message", [
    # a refused scorer: named, with the reason and the opt-in
    ({"dataset": "intermediate_integration"}, r"args.dataset: reasoning-gym dataset 'intermediate_integration' is refused: "
                                        r"its scorer parses the answer with sympy.parse_expr.*unsafe_scorer: true"),
    # a misspelt name: suggestions
    ({"dataset": "leg_countin"}, r"unknown reasoning-gym dataset 'leg_countin'; did you mean leg_counting"),
    # a setting the dataset does not have, in the mix: index and name
    ({"datasets": [{"name": "chain_sum"}, {"name": "leg_counting", "config": {"max_legs": 3}}]},
     r"dataset 'leg_counting': bad config \{'max_legs': 3\}"),
    ({"dataset": "chain_sum", "datasets": [{"name": "chain_sum"}]}, r"either `dataset`.*or `datasets`"),
    ({"datasets": [{"name": "chain_sum", "weight": 0}]}, r"weight"),
    ({"dataset": "chain_sum", "config": {"seed": 3}}, r"config.seed is set by the task"),
    ({"datasets": [{"name": "chain_sum"}, {"name": "chain_sum"}]}, r"listed twice"),
])
def test_bad_task_args_fail_at_load_naming_the_field(args, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"name": "reasoning_gym", "args": args}, TaskConfig)


def test_unsafe_scorer_in_the_task_allows_a_refused_dataset_and_reaches_its_reward():
    task = get_task(TaskConfig(name="reasoning_gym",
                               args={"dataset": "intermediate_integration", "size": 2, "unsafe_scorer": True}))
    assert task.default_rewards[0].args == {"dataset": "intermediate_integration", "unsafe_scorer": True}


# --------------------------------------------------------------------------- end to end: score
def test_three_safe_datasets_score_end_to_end_through_grpo_kit_score(tmp_path):
    """leg_counting and chain_sum (reasoning-gym's own scorers, guarded) and countdown (our parser):
    rows as the task writes them, an honest right and an honest wrong answer each. Beside them,
    rows of intermediate_integration (refused): the plain reward records the refusal as an error,
    the `unsafe_scorer: true` one runs its scorer in the worker (the switch acting)."""
    from grpo_kit.cli import main

    task = get_task(TaskConfig(name="reasoning_gym", args={
        "size": 8, "unsafe_scorer": True, "datasets": [{"name": "leg_counting"}, {"name": "chain_sum"},
                                                       {"name": "countdown"}, {"name": "intermediate_integration"}]}))
    rows = []
    for r in task.load("train"):
        right = r["answer"]
        name = r["rg_dataset"]
        if name == "countdown":
            wrong = _swap_op(right)
        elif name == "intermediate_integration":  # + x: the derivative is off by one
            wrong = right + " + " + json.loads(r["rg_entry"])["metadata"]["variable"]
        else:
            wrong = str(int(right) + 1)
        for text, ok in ((right, True), (wrong, False)):
            rows.append({**{k: r[k] for k in ("prompt", "answer", "rg_dataset", "rg_entry", "rg_config")},
                         "completion": answer_of(text), "honest_right": ok})
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "score.yaml"
    config.write_text("rewards:\n  - {name: reasoning_gym}\n"
                      "  - {name: reasoning_gym, label: unsafe, args: {unsafe_scorer: true}}\n")
    assert main(["score", str(inp), "-o", str(out), "--config", str(config), "--workers", "1",
                 "--no-progress"]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(s["rg_dataset"] for s in scored) == {"leg_counting": 4, "chain_sum": 4, "countdown": 4,
                                                        "intermediate_integration": 4}
    for s in scored:
        expected = 1.0 if s["honest_right"] else (0.05 if s["rg_dataset"] == "countdown" else 0.0)
        assert s["rewards"]["unsafe"] == expected, s
        if s["rg_dataset"] == "intermediate_integration":
            assert s["rewards"]["reasoning_gym"] is None
            assert "'intermediate_integration' is refused" in s["reward_errors"]["reasoning_gym"]
        else:
            assert s["rewards"]["reasoning_gym"] == expected and "reward_errors" not in s, s


# --------------------------------------------------------------------------- end to end: train
def test_two_datasets_train_two_steps_on_the_stand_in_with_per_dataset_metrics(tmp_path):
    """The recipe with two of its datasets, shrunk to the byte-level stand-in: per-dataset reward
    metrics, each counting only its rows (the others are None)."""
    from grpo_kit.train.config import resolve_train_config
    from grpo_kit.train.logger import read_metrics
    from grpo_kit.train.trainer import Trainer
    from tests.conftest import ROOT
    from tests.test_recipes import make_stand_in, stand_in_overrides

    recipe = ROOT / "recipes" / "reasoning_gym_mix_qwen2.5-1.5b.yaml"
    (tmp_path / "stand-in").mkdir()
    model, data = make_stand_in(tmp_path / "stand-in")
    sets = stand_in_overrides(recipe, model, data, tmp_path / "run") + [
        "sampler=hf", "train.steps=2", "train.save_every=0", "task.args.size=16", "task.args.test_size=4",
        "task.args.datasets=[{name: leg_counting, weight: 1}, {name: countdown, weight: 1}]"]
    cfg, _ = resolve_train_config(str(recipe), sets)
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        rows = [trainer.train_step() for _ in range(2)]
    finally:
        trainer.close()
    n = cfg.train.prompts_per_step * cfg.sampling.n
    for row in rows:
        for name in ("rg_leg_counting", "rg_countdown"):
            assert row[f"rewards/{name}/errors"] == 0 and row[f"rewards/{name}/timeouts"] == 0
        # every completion belongs to exactly one dataset: the other reward is None on it
        assert row["rewards/rg_leg_counting/none"] + row["rewards/rg_countdown/none"] == n
        assert row["reward/excluded"] == 0
    assert any(re.fullmatch(r"rewards/rg_countdown/mean", k) for k in read_metrics(tmp_path / "run" /
                                                                                   "metrics.jsonl")[-1])
    assert os.path.exists(tmp_path / "run" / "metrics.jsonl")
