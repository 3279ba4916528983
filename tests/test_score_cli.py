"""`grpo-kit score` end to end: formats, output rows, summary, bad input, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpo_kit.cli import main
from grpo_kit.score_file import summary_path
from tests.conftest import ROOT, fixture


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


ROWS = [
    {"prompt": "p1", "completion": "a", "answer": "a"},
    {"prompt": "p1", "completion": "bb", "answer": "a"},
    {"prompt": "p2", "completion": "a", "answer": "a"},
    {"prompt": "p2", "completion": [{"role": "assistant", "content": "ccc"}], "answer": "a"},
]


def test_scores_jsonl_in_order_with_summary(tmp_path, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    rc = main(["score", str(inp), "-o", str(out), "--reward", fixture("text_length") + "=0.5",
               "--reward", fixture("answer_match"), "--workers", "1", "--no-progress"])
    assert rc == 0
    rows = read_jsonl(out)
    assert [r["completion"] for r in rows] == [r["completion"] for r in ROWS]  # order kept
    assert rows[0]["prompt"] == "p1" and rows[0]["answer"] == "a"  # input columns kept
    assert rows[0]["rewards"] == {fixture("text_length"): 1.0, fixture("answer_match"): 1.0}
    assert rows[1]["reward"] == 0.5 * 2 + 0.0
    # a chat completion: text_length reads the content; answer_match calls .strip() on a list: error
    assert rows[3]["rewards"][fixture("text_length")] == 3.0
    assert "AttributeError" in rows[3]["reward_errors"][fixture("answer_match")]
    summary = json.loads(summary_path(out).read_text())
    am = summary["rewards"][fixture("answer_match")]
    # groups p1 -> [1, 0], p2 -> [1, error]: error rows are left out of the group
    assert am["count"] == 3 and am["errors"] == 1 and am["none"] == 0
    assert am["groups"] == 2 and am["pass@1"] == pytest.approx((0.5 + 1.0) / 2)
    assert summary["rows"] == 4 and summary["invalid_rows"] == 0
    printed = capsys.readouterr().out
    assert "scored 4 rows" in printed and "pass@1" in printed


def test_parquet_and_datasets_folder(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{k: v for k, v in r.items()} for r in ROWS[:3]])
    ds.to_parquet(str(tmp_path / "in.parquet"))
    ds.save_to_disk(str(tmp_path / "ds"))
    for inp in (tmp_path / "in.parquet", tmp_path / "ds"):
        out = tmp_path / f"out-{inp.name}.jsonl"
        assert main(["score", str(inp), "-o", str(out), "--reward", fixture("text_length"),
                     "--workers", "1", "--no-progress"]) == 0
        assert [r["reward"] for r in read_jsonl(out)] == [1.0, 2.0, 1.0]


@pytest.mark.parametrize("line, reason", [
    ('{"completion": "x"', "line 2: not valid JSON"),                         # cut JSON
    ('[1, 2]', "line 2: expected a JSON object, got list"),                     # not an object
    ('{"answer": "1"}', "line 2: field 'completion' is missing or null"),       # no completion
    ('{"completion": 5}', "line 2: field 'completion' must be a string"),       # wrong type
    ('{"completion": [{"role": "assistant"}]}', "line 2: field 'completion': a chat completion"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, capsys, line, reason):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"completion": "ok"}\n' + line + '\n{"completion": "ok2"}\n')
    out = tmp_path / "out.jsonl"
    args = ["score", str(inp), "-o", str(out), "--reward", fixture("text_length"), "--workers", "1",
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{inp}, " in err and reason in err and "--skip-invalid" in err
    assert main(args + ["--skip-invalid"]) == 0
    assert [r["completion"] for r in read_jsonl(out)] == ["ok", "ok2"]
    assert json.loads(summary_path(out).read_text())["invalid_rows"] == 1


def test_config_file_with_reward_settings(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    cfg = tmp_path / "score.yaml"
    cfg.write_text(f"rewards:\n  - name: {fixture('with_setting')}\n    weight: 2\n"
                   f"    args: {{bonus: 1.0}}\n    label: bonus\nscoring:\n  workers: 1\n")
    out = tmp_path / "out.jsonl"
    assert main(["score", str(inp), "-o", str(out), "--config", str(cfg), "--no-progress"]) == 0
    assert [r["rewards"]["bonus"] for r in read_jsonl(out)] == [2.0, 2.0]
    assert [r["reward"] for r in read_jsonl(out)] == [4.0, 4.0]


@pytest.mark.parametrize("extra, message", [
    (["--reward", "no_such_reward"], "unknown reward 'no_such_reward'; known rewards:"),
    (["--reward", "x=heavy"], "the weight after '=' must be a number"),
    (["--reward", fixture("text_length"), "--timeout", "0"], "scoring.timeout: Input should be greater than 0"),
    (["--reward", fixture("text_length"), "--group-by", "nope"], "--group-by column 'nope' is not in the input"),
])
def test_bad_arguments_are_clear(tmp_path, capsys, extra, message):
    inp = write_jsonl(tmp_path / "in.jsonl", ROWS)
    assert main(["score", str(inp), "-o", str(tmp_path / "o.jsonl"), "--no-progress"] + extra) == 2
    assert message in capsys.readouterr().err


def test_output_of_another_input_is_refused(tmp_path, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = write_jsonl(tmp_path / "out.jsonl", [{"completion": "zzz", "reward": 1}])
    args = ["score", str(inp), "-o", str(out), "--reward", fixture("text_length"), "--workers", "1",
            "--no-progress"]
    assert main(args) == 2
    assert "output of another input" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert len(read_jsonl(out)) == 4


def test_resume_after_sigkill(tmp_path):
    """Kill a run with SIGKILL midway; the same command finishes it: no lost, cut or duplicate row."""
    rows = [{"prompt": f"p{i // 4}", "completion": "x" * (i % 7 + 1), "i": i} for i in range(400)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "grpo_kit.cli", "score", str(inp), "-o", str(out),
           "--reward", fixture("slow"), "--workers", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 64):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the scorer and its workers
    proc.wait()
    done_before = out.read_text().count("\n")
    assert 0 < done_before < 400, "the kill must land midway"
    with open(out, "a") as f:  # as if the kill had cut a line in half
        f.write('{"prompt": "p9", "compl')
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, timeout=120)
    got = read_jsonl(out)
    assert [r["i"] for r in got] == list(range(400))  # all rows, in order, once
    assert all(r["reward"] == float(len(r["completion"])) for r in got)
    summary = json.loads(summary_path(out).read_text())
    assert summary["resumed_from_row"] == done_before and summary["rows"] == 400
