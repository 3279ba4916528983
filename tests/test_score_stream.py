"""`grpo-kit score` in bounded memory: chunks of whole groups, a summary accumulated as it goes,
resume read row by row, Parquet in batches, and a real pipe as input."""

import json
import os
import random
import threading
from pathlib import Path

import pytest

from grpo_kit.cli import main
from grpo_kit.data import RowStream
from grpo_kit.metrics import RunningSummary, summarize_rows
from grpo_kit.score_file import chunks, summary_path
from tests.conftest import fixture
from tests.test_score_cli import read_jsonl, write_jsonl

STATS = ("rows", "rewards", "invalid_rows", "resumed_from_row", "scored_this_run")


def grouped_rows(n_groups: int, seed: int = 0, max_group: int = 9) -> list[dict]:
    """Groups of 1..max_group completions; some raise (a '1'), some do not apply (NONE)."""
    rng = random.Random(seed)
    rows = []
    for g in range(n_groups):
        for j in range(rng.randint(1, max_group)):
            text = rng.choice(["ab", "abc1", "NONE", "a" * rng.randint(1, 6), "x1y"])
            rows.append({"prompt": f"p{g}", "completion": text, "answer": "ab", "j": j})
    return rows


def score(inp: Path, out: Path, *extra: str) -> int:
    return main(["score", str(inp), "-o", str(out), "--no-progress", *extra])


REWARDS = ["--reward", fixture("text_length") + "=0.5", "--reward", fixture("fails_on_digit_one"),
           "--reward", fixture("hostile")]


def test_streamed_summary_equals_the_in_memory_one(tmp_path):
    """A file 60x the chunk: the running summary equals summarize_rows over all output rows at once,
    and the rows equal those of a run in one chunk."""
    rows = grouped_rows(600)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    small, whole = tmp_path / "small.jsonl", tmp_path / "whole.jsonl"
    assert score(inp, small, *REWARDS, "--workers", "0", "--chunk-rows", "50") == 0
    assert score(inp, whole, *REWARDS, "--workers", "0", "--chunk-rows", str(len(rows))) == 0
    got = read_jsonl(small)
    assert got == read_jsonl(whole)
    keys = [fixture("text_length"), fixture("fails_on_digit_one"), fixture("hostile")]
    expected = summarize_rows(got, keys, [r["prompt"] for r in got], 1.0)
    summary = json.loads(summary_path(small).read_text())
    assert summary["rows"] == len(rows) > 60 * 50
    assert summary["rewards"] == expected["rewards"]
    errs = summary["rewards"][fixture("fails_on_digit_one")]
    assert errs["errors"] > 0 and summary["rewards"][fixture("hostile")]["none"] > 0  # both paths taken
    assert summary["rewards"][fixture("text_length")]["n"] == 1  # the smallest group bounds k


@pytest.mark.parametrize("seed", range(5))
def test_running_summary_fed_in_chunks_equals_summarize_rows(seed):
    """Random scores, nulls, errors and timeouts, cut into random chunks between groups."""
    rng = random.Random(seed)
    rows, gids = [], []
    for g in range(200):
        for _ in range(rng.randint(1, 12)):
            acc = rng.choice([0.0, 1.0, 1.0, None, "error", "timeout"])
            err = {"acc": f"{acc}: x"} if isinstance(acc, str) else None
            acc = None if err else acc
            fmt = rng.random()
            reward = None if err else (acc or 0.0) + fmt
            rows.append({"rewards": {"acc": acc, "fmt": fmt}, "reward": reward,
                         **({"reward_errors": err} if err else {})})
            gids.append(g)
    run = RunningSummary(["acc", "fmt"], grouped=True, threshold=0.5)
    i = 0
    while i < len(rows):
        j = min(len(rows), i + rng.randint(1, 300))
        while j < len(rows) and gids[j] == gids[j - 1]:  # cut between groups
            j += 1
        run.add(rows[i:j], gids[i:j])
        i = j
    assert run.result() == summarize_rows(rows, ["acc", "fmt"], gids, 0.5)


def test_chunks_hold_whole_groups_and_read_at_most_one_chunk_ahead():
    rows = [(f"f, line {i + 1}", r) for i, r in enumerate(grouped_rows(300, seed=1, max_group=5))]
    pulled = 0

    def source():
        nonlocal pulled
        for item in rows:
            pulled += 1
            yield item

    size, emitted, out = 10, 0, []
    for chunk, gids in chunks(source(), "prompt", size):
        emitted += len(chunk)
        assert pulled - emitted <= 1  # only the row that opened the next group is held back
        assert len(chunk) <= size + 5 - 1  # at most a group's worth over the size
        assert chunk[-1]["prompt"] != (rows[emitted][1]["prompt"] if emitted < len(rows) else None)
        out += chunk
    assert out == [r for _, r in rows]


def test_a_group_that_comes_back_is_an_error_naming_file_line_and_column(tmp_path, capsys):
    rows = [{"prompt": p, "completion": "a"} for p in ["x", "x", "y", "x"]]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    assert score(inp, tmp_path / "o.jsonl", "--reward", fixture("text_length"), "--workers", "0") == 2
    err = capsys.readouterr().err
    assert f"{inp}, line 4: group 'x' (column 'prompt') came before" in err and "sort the input" in err
    assert "Traceback" not in err


def test_resume_in_the_middle_of_a_group_rescores_the_group_for_a_group_reward(tmp_path):
    """A killed write can stop inside a group; a group reward then sees the whole group again."""
    rows = [{"prompt": f"p{i // 5}", "completion": "x" * (i % 5 + 1), "answer": "x"} for i in range(60)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    fresh, out = tmp_path / "fresh.jsonl", tmp_path / "out.jsonl"
    args = ["--reward", "kimi_length_penalty", "--reward", fixture("text_length"), "--workers", "0",
            "--chunk-rows", "10"]
    assert score(inp, fresh, *args) == 0
    lines = fresh.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:23]) + lines[23][:15])  # 23 rows (mid-group p4), then a cut line
    assert score(inp, out, *args) == 0
    assert read_jsonl(out) == read_jsonl(fresh)
    summary = json.loads(summary_path(out).read_text())
    assert summary["resumed_from_row"] == 23 and summary["scored_this_run"] == 37
    assert summary["rewards"] == json.loads(summary_path(fresh).read_text())["rewards"]


@pytest.mark.parametrize("edit, message", [
    # a changed completion far past the first chunk
    (lambda rows: rows[:150] + [{**rows[150], "completion": "changed"}], "out.jsonl:151: this row's 'completion'"),
    # more output rows than input rows
    (lambda rows: rows + [rows[0]], "has more rows than the 200 of the input"),
    # a row some other tool wrote
    (lambda rows: rows[:120] + [{"completion": rows[120]["completion"]}], "out.jsonl:121: a row without"),
])
def test_resume_checks_every_row_as_it_streams(tmp_path, capsys, edit, message):
    rows = [{"completion": f"c{i}"} for i in range(200)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ["--reward", fixture("text_length"), "--workers", "0", "--chunk-rows", "16"]
    assert score(inp, out, *args) == 0
    write_jsonl(out, edit(read_jsonl(out)))
    before = out.read_bytes()
    assert score(inp, out, *args) == 2
    assert message in capsys.readouterr().err
    assert out.read_bytes() == before  # nothing written


def test_parquet_is_read_in_batches_with_row_numbers(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"p{i // 4}", "completion": f"c{i}"} for i in range(50)]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=8)
    got = list(RowStream(path, batch_rows=7))
    assert [r for _, r in got] == rows and got[37][0] == f"{path}, row 38"
    rows[37]["completion"] = None  # a bad row in the 6th batch
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=8)
    assert score(path, tmp_path / "o.jsonl", "--reward", fixture("text_length"), "--workers", "0") == 2
    assert f"{path}, row 38: field 'completion' is missing or null" in capsys.readouterr().err


def test_a_pipe_is_scored_while_it_is_still_being_written(tmp_path):
    """The input is a real FIFO: rows come out of the scorer while later rows are still being written,
    never more than a chunk (+ a group, + what the pipe buffers) behind. The old reader read the
    whole input before it scored anything."""
    fifo = tmp_path / "rows.jsonl"
    os.mkfifo(fifo)
    out = tmp_path / "out.jsonl"
    n, chunk, pad = 1500, 20, "z" * 900  # ~1 KB rows: the pipe (64 KiB) and read buffer (8 KiB) hold ~78
    lag = []

    def writer():
        with open(fifo, "w") as f:
            for i in range(n):
                f.write(json.dumps({"prompt": f"p{i // 4}", "completion": "ab", "pad": pad}) + "\n")
                f.flush()
                if i % 50 == 0:
                    lag.append(i - (out.read_text().count("\n") if out.exists() else 0))

    t = threading.Thread(target=writer)
    t.start()
    assert score(fifo, out, "--reward", fixture("text_length"), "--workers", "0", "--chunk-rows", str(chunk)) == 0
    t.join()
    assert len(read_jsonl(out)) == n
    assert max(lag) <= chunk + 4 + 100, lag  # reading the whole input first: 1450
