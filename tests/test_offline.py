"""Hub ids on a machine without network: `train`, `eval` and `score` end in one line naming what
could not be loaded and how to point at a local copy (exit 2, no traceback); with
``HF_HUB_OFFLINE=1`` they fail at once; a hub id the cache holds still loads offline; and the
local copy the message suggests (``hf download ... --local-dir DIR``) works.

The CLI runs in a subprocess where the environment matters (``HF_HUB_OFFLINE`` and ``HF_HOME``
are read when huggingface_hub is imported): an empty ``HF_HOME`` makes the cache hermetic, and the
"network" cases point ``HF_ENDPOINT`` at a closed port on loopback, a hub that cannot be reached
on any machine (these take the hub's ~25 s of retries: marked slow).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from grpo_kit.cli import main
from grpo_kit.errors import ConfigError

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parent.parent
HF_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE",
           "HF_DATASETS_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from grpo_kit.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"), seed=0, warm_start_steps=0)


def write_config(folder: Path, model: str, task: dict, **algorithm) -> Path:
    data = {"model": {"path": str(model)}, "task": task,
            "sampling": {"n": 2, "max_new_tokens": 3},
            "algorithm": {"type": "grpo", "kl": {"beta": 0.0}, **algorithm},
            "scoring": {"workers": 0},
            "train": {"steps": 1, "prompts_per_step": 2, "torch_threads": 1},
            "run": {"progress": False}}
    path = folder / f"cfg-{len(list(folder.glob('cfg-*')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(args: list[str], tmp_path: Path, *, offline: bool, **env_extra: str) -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of ``python -m grpo_kit.cli ARGS`` with an empty HF_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in HF_VARS}
    env.update(HF_HOME=str(tmp_path / "hf_home"), TOKENIZERS_PARALLELISM="false", **env_extra)
    if offline:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "grpo_kit.cli", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stderr, time.monotonic() - t0


def error_line(stderr: str, verb: str) -> str:
    """The CLI's one error line; fails on a traceback or a second error line."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith(f"grpo-kit {verb}: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def assert_names_the_fix(line: str, hub_id: str, setting: str, repo_type: str) -> None:
    assert repr(hub_id) in line and setting in line
    assert f"hf download {hub_id}" + (" --repo-type dataset" if repo_type == "dataset" else "") in line
    assert "local copy" in line and "huggingface-cli download" in line


# ----------------------------------------------------------------- HF_HUB_OFFLINE=1: at once
@pytest.mark.parametrize("verb, hub_id, setting, repo_type", [
    ("train", "openai/gsm8k", "task.args.dataset", "dataset"),  # the gsm8k task's default dataset
    ("eval", "Qwen/Qwen2.5-0.5B", "model.path", "model"),
])
def test_offline_cli_fails_with_one_line(verb, hub_id, setting, repo_type, tiny_model, tmp_path):
    task = {"name": "gsm8k"} if repo_type == "dataset" else {"name": "arithmetic"}
    cfg = write_config(tmp_path, tiny_model if repo_type == "dataset" else hub_id, task)
    rc, err, _ = cli([verb, str(cfg)] + (["--output-dir", str(tmp_path / "run")] if verb == "train" else []),
                     tmp_path, offline=True)
    line = error_line(err, verb)
    assert rc == 2
    assert_names_the_fix(line, hub_id, setting, repo_type)
    assert "HF_HUB_OFFLINE" in line and "is set (no network) and the local cache does not hold it" in line


MISSING = "grpo-kit-tests/not-in-any-cache"  # no cache holds it: the in-process tests are hermetic


def test_offline_failure_is_immediate_in_every_verb(tiny_model, tmp_path, capsys):
    # in-process (conftest sets HF_HUB_OFFLINE=1 before anything imports huggingface_hub), after the
    # imports any run pays: each loader fails in well under a second, where the hub's retries take ~25 s
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    import grpo_kit.train.evaluate  # noqa: F401
    import grpo_kit.train.trainer  # noqa: F401

    ds = write_config(tmp_path, tiny_model, {"dataset": MISSING})
    model = write_config(tmp_path, MISSING, {"name": "arithmetic"})
    value = write_config(tmp_path, tiny_model, {"name": "arithmetic"}, type="ppo", advantage="gae",
                         value={"model": MISSING})
    main(["eval", str(model)])  # warm: the arithmetic task's first load
    capsys.readouterr()
    cases = [
        (["train", str(ds), "--output-dir", str(tmp_path / "r1")], "task.dataset", "dataset"),
        (["eval", str(ds)], "task.dataset", "dataset"),
        (["train", str(model), "--output-dir", str(tmp_path / "r2")], "model.path", "model"),
        (["eval", str(model)], "model.path", "model"),
        (["train", str(value), "--output-dir", str(tmp_path / "r3")], "algorithm.value.model", "model"),  # PPO
        (["score", MISSING, "-o", str(tmp_path / "scored.jsonl"), "--reward", "think_format"], "the input",
         "dataset"),
    ]
    for argv, setting, repo_type in cases:
        t0 = time.monotonic()
        assert main(argv) == 2, argv
        seconds = time.monotonic() - t0
        line = error_line(capsys.readouterr().err, argv[0])
        assert_names_the_fix(line, MISSING, setting, repo_type)
        assert f"{MISSING!r} is not a local path and cannot be loaded" in line
        assert seconds < 5.0, (argv, seconds)


def test_missing_local_model_folder_is_named(tmp_path):
    from grpo_kit.train.config import ModelConfig
    from grpo_kit.train.models import load_policy

    with pytest.raises(ConfigError, match=r"model.path '\./no/such/folder': no such folder"):
        load_policy(ModelConfig(path="./no/such/folder"))


# ----------------------------------------------------------------- the fixes the message names
def test_a_cached_hub_model_still_loads_offline(tiny_model, tmp_path):
    # the model laid out in HF_HOME as `hf download` caches it: offline, the hub id trains
    repo = tmp_path / "hf_home" / "hub" / "models--grpo-kit-tests--tiny"
    sha = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for f in Path(tiny_model).iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    cfg = write_config(tmp_path, "grpo-kit-tests/tiny", {"name": "arithmetic"})
    run = tmp_path / "run"
    rc, err, _ = cli(["train", str(cfg), "--output-dir", str(run)], tmp_path, offline=True)
    assert rc == 0, err
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [1]


def write_gsm8k_copy(folder: Path) -> Path:
    """A folder laid out as `hf download openai/gsm8k --repo-type dataset --local-dir DIR` writes
    it: two configs (main, socratic) declared in the README, parquet files per split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for config in ("main", "socratic"):
        (folder / config).mkdir(parents=True)
        for split in ("train", "test"):
            pq.write_table(pa.table({"question": [f"{config} {split} 1", f"{config} {split} 2"],
                                     "answer": ["1 + 1 = 2\n#### 2", "#### 1,000"]}),
                           folder / config / f"{split}-00000-of-00001.parquet")
    configs = [{"config_name": c, "data_files": [{"split": s, "path": f"{c}/{s}-*"} for s in ("train", "test")]}
               for c in ("main", "socratic")]
    (folder / "README.md").write_text("---\n" + yaml.safe_dump({"configs": configs}) + "---\n")
    return folder


def test_the_local_copy_the_message_suggests_loads(tmp_path):
    from tasks import get_task
    from tasks.config import TaskConfig

    copy = str(write_gsm8k_copy(tmp_path / "gsm8k"))
    main_cfg = get_task(TaskConfig(name="gsm8k", args={"dataset": copy}, prompt_style="raw", template="{question}"))
    rows = main_cfg.load("test")
    assert [r["prompt"] for r in rows] == ["main test 1", "main test 2"]  # dataset_config main, the default
    assert [r["answer"] for r in rows] == ["2", "1000"]
    socratic = get_task(TaskConfig(name="gsm8k", args={"dataset": copy, "dataset_config": "socratic"},
                                   prompt_style="raw", template="{question}"))
    assert [r["prompt"] for r in socratic.load("train")] == ["socratic train 1", "socratic train 2"]
    wrong = get_task(TaskConfig(name="gsm8k", args={"dataset": copy, "dataset_config": "nope"}))
    with pytest.raises(ConfigError, match="has configs main, socratic; choose one with dataset_config"):
        wrong.load("train")


# ----------------------------------------------------------------- an unreachable hub (no offline flag)
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: connections are refused


@pytest.mark.slow
def test_unreachable_hub_names_what_and_how(tiny_model, tmp_path):
    # train with a hub dataset and eval with a hub model, both at once (each waits out the retries)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    ds_cfg = write_config(tmp_path, tiny_model, {"name": "gsm8k"})
    model_cfg = write_config(tmp_path, "Qwen/Qwen2.5-0.5B", {"name": "arithmetic"})
    env = {k: v for k, v in os.environ.items() if k not in HF_VARS}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_ENDPOINT=endpoint, HF_HUB_ETAG_TIMEOUT="2",
               HF_HUB_DOWNLOAD_TIMEOUT="2", TOKENIZERS_PARALLELISM="false")
    runs = {
        "train": subprocess.Popen([sys.executable, "-m", "grpo_kit.cli", "train", str(ds_cfg), "--output-dir",
                                   str(tmp_path / "run")], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True),
        "eval": subprocess.Popen([sys.executable, "-m", "grpo_kit.cli", "eval", str(model_cfg)], cwd=ROOT, env=env,
                                 stderr=subprocess.PIPE, text=True),
    }
    out = {verb: (p.wait(timeout=300), p.stderr.read()) for verb, p in runs.items()}
    for verb, hub_id, setting, repo_type in (("train", "openai/gsm8k", "task.args.dataset", "dataset"),
                                             ("eval", "Qwen/Qwen2.5-0.5B", "model.path", "model")):
        rc, err = out[verb]
        line = error_line(err, verb)
        assert rc == 2
        assert_names_the_fix(line, hub_id, setting, repo_type)
        assert "the hub could not be reached" in line
        assert "set HF_HUB_OFFLINE=1 (and HF_DATASETS_OFFLINE=1) to fail at once" in line


class _NoSuchRepo(BaseHTTPRequestHandler):
    """A hub on loopback that has no repositories: 404 with the hub's RepoNotFound error code."""

    def _reply(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("X-Error-Message", "Repository not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _reply

    def log_message(self, *args):
        pass


def test_a_repo_the_hub_does_not_have_is_named(tiny_model, tmp_path):
    # a misspelt id on a reachable hub: "no such dataset / model", and no retries (404 is final)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if k not in HF_VARS}
        env.update(HF_HOME=str(tmp_path / "hf_home"), HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
                   TOKENIZERS_PARALLELISM="false")
        ds_cfg = write_config(tmp_path, tiny_model, {"name": "gsm8k", "args": {"dataset": "openai/gsm8kk"}})
        model_cfg = write_config(tmp_path, "Qwen/Qwen2.5-0.5BB", {"name": "arithmetic"})
        runs = [(verb, hub_id, repo_type, subprocess.Popen(
                    [sys.executable, "-m", "grpo_kit.cli", verb, str(cfg)], cwd=ROOT, env=env,
                    stderr=subprocess.PIPE, text=True))
                for verb, hub_id, repo_type, cfg in (("eval", "openai/gsm8kk", "dataset", ds_cfg),
                                                     ("eval", "Qwen/Qwen2.5-0.5BB", "model", model_cfg))]
        for verb, hub_id, repo_type, p in runs:
            rc, err = p.wait(timeout=120), p.stderr.read()
            line = error_line(err, verb)
            assert rc == 2
            assert f"the hub has no such {repo_type} (or it is private: log in with `hf auth login`)" in line, line
            assert repr(hub_id) in line
    finally:
        server.shutdown()
        server.server_close()
