"""Reward models: the Bradley-Terry loss by hand, `grpo-kit rm train` (the demo learns; margin,
centering and LoRA act; resume equals an uninterrupted run; bad input is named) and `grpo-kit rm
eval` on a hand-built set whose answer is known; the trained RM loads in `grpo-kit score`."""

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from grpo_kit.algorithms.preference import bradley_terry_loss  # noqa: E402
from grpo_kit.cli import main  # noqa: E402
from grpo_kit.config import build_config  # noqa: E402
from grpo_kit.data import InputError  # noqa: E402
from grpo_kit.errors import ConfigError  # noqa: E402
from grpo_kit.rm.config import RMConfig  # noqa: E402
from grpo_kit.rm.data import encode_pairs, read_pairs  # noqa: E402
from grpo_kit.rm.demo import demo_pairs  # noqa: E402
from grpo_kit.rm.stats import pair_stats  # noqa: E402
from grpo_kit.rm.train import RMTrainer  # noqa: E402
from rewards.model import reward_model  # noqa: E402


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def nll(x):  # -log sigmoid(x), by hand
    return math.log(1 + math.exp(-x))


# --------------------------------------------------------------------------- the loss by hand

LOSS_CASES = [
    # (r_c, r_r, margin, center_coef, expected loss)
    ([1.0], [0.0], None, 0.0, nll(1.0)),  # plain Bradley-Terry
    ([1.0, -1.0], [0.0, 1.0], None, 0.0, (nll(1.0) + nll(-2.0)) / 2),  # a wrong pair costs more
    ([1.0], [0.0], [1.0], 0.0, nll(0.0)),  # the margin is subtracted: log 2
    ([2.0, 0.5], [0.0, 0.0], [0.5, 2.0], 0.0, (nll(1.5) + nll(-1.5)) / 2),  # per-pair margins
    ([1.0], [0.0], None, 0.1, nll(1.0) + 0.1 * 1.0),  # centering: coef x (r_c + r_r)^2
    ([3.0, 1.0], [1.0, -3.0], [1.0, 0.0], 0.01, (nll(1.0) + 0.01 * 16 + nll(4.0) + 0.01 * 4) / 2),  # both
]


@pytest.mark.parametrize("chosen,rejected,margin,coef,expected", LOSS_CASES)
def test_bradley_terry_loss_by_hand(chosen, rejected, margin, coef, expected):
    m = torch.tensor(margin) if margin is not None else None
    loss, _ = bradley_terry_loss(torch.tensor(chosen), torch.tensor(rejected), m, center_coef=coef)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_centering_gradient_and_micro_batches():
    # d/dr_c of coef (r_c + r_r)^2 is 2 coef (r_c + r_r): the centering pulls the sum to 0, not the gap
    c, r = torch.tensor([2.0, 1.0], requires_grad=True), torch.tensor([1.0, 1.0], requires_grad=True)
    bradley_terry_loss(c, r, center_coef=0.5)[0].backward()
    off = torch.tensor([2.0, 1.0], requires_grad=True)
    bradley_terry_loss(off, torch.tensor([1.0, 1.0]))[0].backward()
    assert (c.grad - off.grad).tolist() == pytest.approx([0.5 * 2 * 3 / 2, 0.5 * 2 * 2 / 2])
    # two micro-batches divided by the step's pairs add up to the whole batch
    whole, _ = bradley_terry_loss(c, r, center_coef=0.5)
    halves = sum(bradley_terry_loss(c[i:i + 1], r[i:i + 1], center_coef=0.5, num_pairs=2)[0] for i in range(2))
    assert halves.item() == pytest.approx(whole.item())


def test_pair_stats_by_hand():
    s = pair_stats([3.0, 1.0, 0.0, 0.1], [0.0, 1.0, 0.5, 0.0], ["x", "x", "y", None])
    assert (s["wins"], s["ties"], s["losses"]) == (2, 1, 1)
    assert s["accuracy"] == 0.625 and s["accuracy_strict"] == 0.5
    assert s["margin"]["mean"] == pytest.approx((3 + 0 - 0.5 + 0.1) / 4)
    assert s["per_category"] == {
        "(none)": {"pairs": 1, "wins": 1, "ties": 0, "losses": 0, "accuracy": 1.0, "accuracy_strict": 1.0},
        "x": {"pairs": 2, "wins": 1, "ties": 1, "losses": 0, "accuracy": 0.75, "accuracy_strict": 0.5},
        "y": {"pairs": 1, "wins": 0, "ties": 0, "losses": 1, "accuracy": 0.0, "accuracy_strict": 0.0}}
    bins = s["calibration"]["bins"]  # |gaps| 3, 0.5, 0.1 (the tie left out)
    assert [(b["abs_gap_low"], b["pairs"], b["observed"]) for b in bins] == [(0.0, 1, 1.0), (0.5, 1, 0.0), (2.0, 1, 1.0)]
    assert bins[0]["predicted"] == pytest.approx(1 / (1 + math.exp(-0.1)))


# --------------------------------------------------------------------------- rm train

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The built-in demo, run once for the module: ``grpo-kit rm train --output-dir DIR``."""
    import contextlib
    import io

    run = tmp_path_factory.mktemp("rm_demo")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["rm", "train", "--output-dir", str(run)]) == 0
    (run / "stderr.txt").write_text(err.getvalue())
    return run


def test_demo_learns(demo_run):
    said = (demo_run / "stderr.txt").read_text()  # what it did and where the model is
    assert "learns to prefer the right sum" in said and "360 held-out pairs" in said
    assert f"reward model {demo_run / 'model'} (an AutoModelForSequenceClassification" in said
    stats = json.loads((demo_run / "model" / "reward_stats.json").read_text())
    assert stats["accuracy"] >= 0.9 and stats["measured_on"] == "data.test" and stats["pairs"] == 360
    evals = [r for r in map(json.loads, (demo_run / "metrics.jsonl").read_text().splitlines()) if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [100, 200, 300, 400]  # eval_every 100
    assert evals[-1]["eval/accuracy"] == pytest.approx(stats["accuracy"])
    assert {"eval/margin_mean", "eval/reward_mean", "eval/reward_std"} <= set(evals[-1])
    net = transformers.AutoModelForSequenceClassification.from_pretrained(demo_run / "model")
    assert net.config.num_labels == 1 and net.config.pad_token_id == 0  # <pad>
    assert not (demo_run / "model" / "trainer_state.pt").exists()


def test_demo_model_scores_in_grpo_kit_score(demo_run, tmp_path):
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b + d)} for a, b in ((3, 4), (9, 8), (0, 0)) for d in (0, 1, 5)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    config = tmp_path / "score.yaml"
    config.write_text(f"rewards:\n  - name: reward_model\n    args: {{model: {demo_run / 'model'}}}\n")
    assert main(["score", str(inp), "-o", str(tmp_path / "out.jsonl"), "--config", str(config), "--no-progress"]) == 0
    scores = [json.loads(line)["rewards"]["reward_model"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for i in range(0, 9, 3):  # per prompt: the right sum above the wrong ones
        assert scores[i] > max(scores[i + 1], scores[i + 2])
    direct = reward_model([r["completion"] for r in rows], prompt=[r["prompt"] for r in rows], model=str(demo_run / "model"))
    assert scores == pytest.approx(direct, abs=1e-5)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A randomly initialised demo-shaped model and 96 training / 32 test pairs."""
    from grpo_kit.demo import build_tiny_model

    root = tmp_path_factory.mktemp("rm_small")
    model = build_tiny_model(root / "base", warm_start_steps=0)
    train, test = demo_pairs(0)
    for i, r in enumerate(train):
        r["margin"] = float(i % 3)
    return {"model": str(model), "train": str(write_jsonl(root / "train.jsonl", train[:96])),
            "test": str(write_jsonl(root / "test.jsonl", test[:32])), "root": root}


def small_config(small, **over) -> RMConfig:
    data = {"model": {"path": small["model"]}, "data": {"train": small["train"], "test": small["test"]},
            "optim": {"lr": 3e-3}, "train": {"steps": 6, "batch_size": 16, "eval_every": 3, "torch_threads": 1}}
    for key, value in over.items():
        block, _, name = key.partition("__")
        data.setdefault(block, {})[name] = value
    return build_config(data, RMConfig)


@pytest.mark.parametrize("switch", ["margin", "center_coef"])
def test_margin_and_centering_act_in_the_trainer(small, tmp_path, switch):
    # step 1's loss equals the formula on the initial scores; the switch off gives the plain loss
    cfg = small_config(small, loss__center_coef=0.5 if switch == "center_coef" else 0.0)
    trainer = RMTrainer(cfg, tmp_path / "run")
    idx = type(trainer.cursor)(len(trainer.train_pairs), cfg.train.seed).take(16)  # the first batch
    pick = lambda ids: [ids[i] for i in idx]  # noqa: E731
    c, r = trainer.scores((pick(trainer.train_ids[0]), pick(trainer.train_ids[1])))
    margins = [trainer.train_pairs[i].margin for i in idx] if switch == "margin" else [0.0] * 16
    if switch == "margin":  # the data's margins reach the loss; without the column they are 0
        assert set(margins) == {0.0, 1.0, 2.0}
    else:
        for p in trainer.train_pairs:
            p.margin = 0.0
    expected = sum(nll(a - b - m) + cfg.loss.center_coef * (a + b) ** 2 for a, b, m in zip(c, r, margins)) / 16
    plain = sum(nll(a - b) for a, b in zip(c, r)) / 16
    got = trainer.train_step()["train/loss"]
    assert got == pytest.approx(expected, rel=1e-4) and abs(got - plain) > 1e-3


def test_micro_batches_equal_one_batch(small, tmp_path):
    one = RMTrainer(small_config(small), tmp_path / "a")
    four = RMTrainer(small_config(small, train__micro_batch_size=4), tmp_path / "b")
    a, b = one.train_step(), four.train_step()
    assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-5)
    assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_equals_an_uninterrupted_run(small, tmp_path):
    cfg = small_config(small, train__save_every=3)
    RMTrainer(cfg, tmp_path / "whole").train()
    stopped = RMTrainer(cfg, tmp_path / "cut")
    stopped.steps = 3  # stops after step 3's checkpoint, as a run killed then would
    stopped.train()
    (tmp_path / "cut" / "model").rename(tmp_path / "cut" / "model-at-3")
    RMTrainer(cfg, tmp_path / "cut", resume=True).train()
    whole, cut = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "cut")
    assert [m["step"] for m in cut] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(whole[3:], cut[3:]):  # the steps after the resume
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-5), (a, b)
    assert cut[-1]["eval/accuracy"] == whole[-1]["eval/accuracy"]


def test_lora_trains_the_adapter_and_the_head_and_exports_merged(small, tmp_path):
    cfg = small_config(small, model__lora={"r": 4, "alpha": 8})
    trainer = RMTrainer(cfg, tmp_path / "run")
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert any("score" in n for n in trainable)  # the new head is trained whole
    base = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "base_layer" in n}
    head = [p.detach().clone() for n, p in trainer.model.named_parameters() if "score" in n and p.requires_grad]
    for _ in range(6):
        trainer.train_step()
    assert all(torch.equal(p, base[n]) for n, p in trainer.model.named_parameters() if n in base)  # frozen
    assert not torch.equal(head[0], next(p for n, p in trainer.model.named_parameters() if "score" in n and p.requires_grad))
    chosen, _ = trainer.scores(trainer.test_ids)
    trainer.save()
    out = trainer.export()
    assert not (out / "adapter_config.json").exists()  # a plain classifier, the adapter merged in
    assert (tmp_path / "run" / "checkpoints" / "step-000006" / "adapter_config.json").exists()
    pairs = read_pairs(small["test"])
    merged = reward_model([p.chosen for p in pairs], prompt=[p.prompt for p in pairs], model=str(out))
    assert merged == pytest.approx(chosen, abs=1e-4)  # the exported model scores as the trained one
    resumed = RMTrainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 7})}),
                        tmp_path / "run", resume=True)
    assert resumed.step == 6


def test_chat_messages_go_through_the_template(tmp_path):
    from tiny_models import build_tiny_classifier

    path = build_tiny_classifier(tmp_path / "m")
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(path)
    prompt = [{"role": "system", "content": "please solve"}, {"role": "user", "content": "what is 2 + 2 ?"}]
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": prompt, "chosen": [{"role": "assistant", "content": "4"}],
                                             "rejected": "5"}])
    chosen, rejected = encode_pairs(tok, read_pairs(f), 64)
    want = tok.apply_chat_template(prompt + [{"role": "assistant", "content": "4"}], tokenize=False)
    assert chosen[0] == tok(want, add_special_tokens=False)["input_ids"]
    assert rejected[0] == tok(want.replace("4 <|end|>", "5 <|end|>"), add_special_tokens=False)["input_ids"]


BAD_ROWS = [
    # (row, error fragment)
    ({"prompt": "p", "chosen": "a"}, "line 2: field 'rejected' is missing or null"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, "line 2: field 'chosen' must be a string or a list of chat"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}, "line 2: field 'margin' must be a finite number"),
    ({"prompt": 7, "chosen": "a", "rejected": "b"}, "line 2: field 'prompt' must be a string, a list of chat"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "category": 1}, "line 2: field 'category' must be a string"),
]


@pytest.mark.parametrize("row,fragment", BAD_ROWS)
def test_bad_rows_name_file_line_and_field(tmp_path, row, fragment):
    f = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(InputError, match=fragment) as info:
        read_pairs(f)
    assert str(f) in str(info.value)


def test_config_and_model_errors(small, tmp_path, capsys, monkeypatch):
    assert main(["rm", "train", "--set", "loss.centre_coef=1"]) == 2
    assert "loss.centre_coef: unknown key; did you mean 'center_coef'?" in capsys.readouterr().err
    with monkeypatch.context() as m:  # under torchrun: the ranks need one run folder, named
        m.setenv("RANK", "0")
        m.setenv("WORLD_SIZE", "2")
        assert main(["rm", "train"]) == 2
        assert "under torchrun give --output-dir" in capsys.readouterr().err
    from tiny_models import build_tiny_classifier

    two = build_tiny_classifier(tmp_path / "two")
    cfg = json.loads((two / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "a", "1": "b"}, {"a": 0, "b": 1}
    (two / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="a classifier with 2 labels; a reward model has one"):
        RMTrainer(small_config(small, model__path=str(two)), tmp_path / "run")


# --------------------------------------------------------------------------- rm eval

KNOWN = [
    # (chosen, rejected, answer, category): exact_match's verdict on the pair
    ("4", "5", "4", "easy"),  # right over wrong: a win
    ("9", "8", "9", "easy"),  # a win
    ("12", "21", "12", "hard"),  # a win
    ("7", "6", "5", "hard"),  # both wrong: a tie
    ("3", "10", "10", "hard"),  # the rejected one is right: a loss
]


def test_rm_eval_on_a_known_set(tmp_path, capsys):
    data = write_jsonl(tmp_path / "known.jsonl", [{"prompt": "q", "chosen": c, "rejected": r, "answer": a, "category": k}
                                                  for c, r, a, k in KNOWN])
    out = tmp_path / "summary.json"
    assert main(["rm", "eval", "--data", str(data), "--reward", "exact_match", "-o", str(out)]) == 0
    s = json.loads(out.read_text())["scorers"]["exact_match"]
    assert (s["pairs"], s["wins"], s["ties"], s["losses"]) == (5, 3, 1, 1)
    assert s["accuracy"] == pytest.approx(3.5 / 5) and s["accuracy_strict"] == pytest.approx(3 / 5)
    assert s["per_category"]["easy"]["accuracy"] == 1.0 and s["per_category"]["hard"]["accuracy"] == pytest.approx(1.5 / 3)
    assert s["calibration"]["bins"] == [{"abs_gap_low": 1.0, "abs_gap_high": 2.0, "pairs": 4,
                                         "predicted": pytest.approx(1 / (1 + math.exp(-1))), "observed": 0.75}]
    table = capsys.readouterr().out
    assert "exact_match" in table and "0.700" in table and "accuracy per category" in table


def test_rm_eval_compares_the_model_and_a_user_reward(demo_run, tmp_path, capsys):
    # the trained RM through reward_model gives the trainer's own test accuracy; a user reward that
    # says "does not apply" to some pairs has them excluded and counted, not scored 0
    user = tmp_path / "user.py"
    user.write_text("def odd_only(completions, **_):\n"
                    "    return [float(len(c)) if int(c) % 2 else None for c in completions]\n")
    out = tmp_path / "s.json"
    assert main(["rm", "eval", str(demo_run / "model"), "--data", str(demo_run / "data" / "test.jsonl"),
                 "--reward", f"{user}:odd_only", "-o", str(out)]) == 0
    summary = json.loads(out.read_text())
    model = summary["scorers"][f"model {demo_run / 'model'}"]
    stats = json.loads((demo_run / "model" / "reward_stats.json").read_text())
    assert model["accuracy"] == pytest.approx(stats["accuracy"], abs=1e-9)
    assert model["reward"]["mean"] == pytest.approx(stats["reward_mean"], abs=1e-4)
    assert set(model["per_category"]) == {"near miss", "far"}
    rows = [json.loads(line) for line in (demo_run / "data" / "test.jsonl").read_text().splitlines()]
    both_odd = sum(int(r["chosen"]) % 2 == 1 and int(r["rejected"]) % 2 == 1 for r in rows)
    user_stats = summary["scorers"][f"{user}:odd_only"]
    assert user_stats["pairs"] == both_odd and user_stats["excluded"]["none"] == len(rows) - both_odd
    assert "calibration of model" in capsys.readouterr().out


def test_rm_eval_needs_something_to_evaluate(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"chosen": "a", "rejected": "b"}])
    assert main(["rm", "eval", "--data", str(data)]) == 2
    assert "give a MODEL and/or --reward NAME" in capsys.readouterr().err


def test_pairs_from_parquet_and_a_datasets_folder(tmp_path):
    # the same pairs from JSONL, Parquet and a save_to_disk folder (its "test" split)
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = demo_pairs(0)[1][:10]
    rows[0]["margin"] = 1.5
    for r in rows[1:]:
        r["margin"] = None
    jsonl = read_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    for other in (read_pairs(tmp_path / "p.parquet"), read_pairs(tmp_path / "ds", split="test")):
        assert [(p.prompt, p.chosen, p.rejected, p.margin, p.category) for p in other] == \
               [(p.prompt, p.chosen, p.rejected, p.margin, p.category) for p in jsonl]
    assert jsonl[0].margin == 1.5 and jsonl[1].margin == 0.0
