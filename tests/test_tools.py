"""Multi-turn, tool-integrated rollouts (issue 17): the formats' parsing, user tools in worker
processes, a rollout whose prompt opens the first call (masks, log-probs and the record against
the tokens), the sandboxed python tool and chat-template tool calls on a scripted model, GRPO and
PPO training on multi-turn records, and the tools demo's first steps."""

from __future__ import annotations

import json

import pytest
import torch

from grpo_kit.config import ConfigError
from grpo_kit.rollout.multiturn import (Call, Chat, Fenced, Tag, ToolRunner, ToolsConfig, load_tools,
                                        tool_metrics)
from grpo_kit.tools.base import calculator_spec, python_spec
from grpo_kit.tools.sandbox import bwrap_path
from tests.conftest import ROOT

FIX = str(ROOT / "tests" / "fixture_tools.py")
needs_bwrap = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed (.ci/run installs it)")


# ------------------------------------------------------------------------------ formats
def test_fenced_format_parses_calls_and_refuses_near_misses():
    f = Fenced({"python": python_spec({}), "calculator": calculator_spec()})
    ok = f.parse("Let me compute.\n```python\nprint(6*7)\n```\n")
    assert (ok.tool, ok.args, ok.error) == ("python", {"code": "print(6*7)"}, None)
    assert f.parse("```calculator\n2*3\n```\n").args == {"expression": "2*3"}
    assert f.parse("no call at all") is None
    assert f.parse("```\nplain block").error.startswith("a bare ``` fence; a call names its tool: ```python")
    assert f.parse("```bash\nls\n```\n").error.startswith("unknown tool 'bash'")
    assert f.parse("text ```\n").error.startswith("a bare ``` fence")
    assert f.parse("```python\n" + "x" * 30_000 + "\n```\n").error.startswith("the call is longer")


def test_tag_format_takes_the_first_closing_tag():
    f = Tag({"calculator": calculator_spec()})
    assert f.stops == ["</calculator>"]
    c = f.parse("<calculator>12*34</calculator>")
    assert (c.tool, c.args, c.error) == ("calculator", {"expression": "12*34"}, None)
    assert f.parse("12*34</calculator>").error == "</calculator> without <calculator>"
    assert f.parse("<calculator>12*34") is None  # not closed: not a call


def test_chat_format_checks_the_json_and_the_schema():
    from grpo_kit.registry import get_tool

    add, _ = get_tool(f"{FIX}:add")
    f = Chat({"calculator": calculator_spec(), "add": add})
    c = f.parse('<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>')
    assert (c.tool, c.args, c.error) == ("add", {"a": 2, "b": 3}, None)
    as_string = f.parse('<tool_call>{"name": "add", "arguments": "{\\"a\\": 2, \\"b\\": 3}"}</tool_call>')
    assert as_string.args == {"a": 2, "b": 3} and as_string.error is None
    near = {'{"name": "add", "arguments": {"a": 2}}': "missing argument 'b'",
            '{"name": "add", "arguments": {"a": 2, "b": "3"}}': "argument 'b' must be of JSON type integer",
            '{"name": "add", "arguments": {"a": 2, "b": 3, "c": 4}}': "unknown argument 'c'",
            '{"name": "sub", "arguments": {}}': "unknown tool 'sub'",
            '{"name": "add", "arguments": {"a": true, "b": 3}}': "argument 'a' must be of JSON type integer",
            "add(2, 3)": "the call is not JSON",
            '["add"]': "a call must be"}
    for body, why in near.items():
        got = f.parse(f"<tool_call>{body}</tool_call>")
        assert got.error is not None and got.error.startswith(why), (body, got.error)


def test_config_refuses_unknown_names_and_text_formats_for_json_tools(tmp_path):
    with pytest.raises(ValueError, match="unknown tool-call format 'xml'; the formats: fenced, tag, chat"):
        ToolsConfig(names=["calculator"], format="xml")
    with pytest.raises(ConfigError, match="unknown tool 'calc'; the built-in tools: calculator, python"):
        load_tools(ToolsConfig(names=["calc"]))
    with pytest.raises(ConfigError, match="is not marked with @grpo_kit.tools.tool"):
        load_tools(ToolsConfig(names=[f"{FIX}:unmarked"]))
    with pytest.raises(ConfigError, match="a tool must take one required string argument; 'add'"):
        Fenced({n: s for n, (s, _) in load_tools(ToolsConfig(names=[f"{FIX}:add"])).items()})


# ------------------------------------------------------------------------------ running tools
def test_user_tools_run_in_workers_with_their_timeouts():
    tools = load_tools(ToolsConfig(names=["calculator", f"{FIX}:lookup", f"{FIX}:sleepy", f"{FIX}:boom"]))
    runner = ToolRunner(tools, ToolsConfig())
    try:
        out = runner.run([Call("lookup", {"key": "Peru"}, "Peru"), Call("sleepy", {"seconds": "30"}, "30"),
                          Call("boom", {"what": "luck"}, "luck"), Call("calculator", {"expression": "7/2"}, "7/2"),
                          Call("calculator", {"expression": "1/0"}, "1/0"), Call(None, None, "x", "malformed")])
    finally:
        runner.close()
    got = [(o.text, o.status) for o, _ in out]
    assert got[0] == ("Lima", "ok")
    assert got[1][1] == "timeout" and "timed out after 0.5 s" in got[1][0] and out[1][1] < 10
    assert got[2][1] == "error" and "RuntimeError: no luck" in got[2][0]
    assert got[3:] == [("7/2", "ok"), ("error: division by zero", "error"), ("error: malformed", "error")]


# ------------------------------------------------------------------------------ the demo model
@pytest.fixture(scope="module")
def tools_model(tmp_path_factory):
    from grpo_kit.demo import build_tools_model

    return build_tools_model(tmp_path_factory.mktemp("tools-model"), seed=0, warm_start_steps=150, tool_rate=0.5)


def _sampler(path, *, n=4, temperature=1.0, max_turns=2, logprobs=True, max_new_tokens=24):
    from grpo_kit.rollout import SamplingConfig, make_sampler
    from grpo_kit.train.config import ModelConfig
    from grpo_kit.train.models import load_policy

    model, tok, dev, _ = load_policy(ModelConfig(path=str(path)))
    tools = ToolsConfig(names=["calculator"], format="tag", max_turns=max_turns)
    cfg = SamplingConfig(n=n, temperature=temperature, max_new_tokens=max_new_tokens)
    return model, tok, dev, make_sampler("hf", model, tok, cfg, logprobs=logprobs, tools=tools)


def _check_record(rb, tok):
    """Every completion's turns tile its tokens; the mask is 0 exactly on the tools' outputs,
    which decode to ``<output>VALUE</output>`` with the calculator's value of the call."""
    from grpo_kit.tools import calculator

    calls = 0
    for ids, mask, lps, turns in zip(rb.completion_ids, rb.completion_masks, rb.sampler_logprobs, rb.turns):
        assert len(ids) == len(mask) == len(lps)
        at = 0
        for t in turns:
            assert t["start"] == at and t["end"] >= t["start"]
            assert mask[t["start"]:t["end"]] == [1] * (t["end"] - t["start"])
            at = t["end"]
            if "status" in t and t["status"] != "not_run":
                calls += 1
                s, e = t["inserted"]
                assert s == t["end"] and mask[s:e] == [0] * (e - s) and lps[s:e] == [0.0] * (e - s)
                assert t["output"] == calculator(t["call"]) and t["status"] == ("error" if "error" in t["output"] else "ok")
                assert tok.decode(ids[s:e]) == f"<output>{t['output']}</output>"[:len(tok.decode(ids[s:e]))]
                at = e
        assert at == len(ids)
    return calls


def test_a_rollout_whose_prompt_opens_the_call(tools_model):
    """The prompt ends with ``<calculator>``: the model closes the call, the tool's output is
    inserted, the model answers. Masks, log-probs and the record match the tokens; the trainer's
    recomputed log-probs of the sampled tokens equal the sampler's across turns."""
    from grpo_kit.train.batch import forward_logprobs, make_batch
    from grpo_kit.train.models import encode_prompt

    model, tok, dev, sampler = _sampler(tools_model, temperature=0.7)
    prompts = [encode_prompt(tok, p) for p in ["12*34=<calculator>", "57*89=<calculator>", "99*10=<calculator>"]]
    rb = sampler.sample(prompts, seed=1)
    assert rb.size == 12 and rb.turns is not None
    calls = _check_record(rb, tok)
    assert calls >= 6, rb.completions  # the opened call is closed in most completions
    ok = [i for i, t in enumerate(rb.turns) if t[0].get("status") == "ok"]
    assert rb.column("tool_calls")[ok[0]][0]["status"] == "ok"
    assert rb.completions[ok[0]] == tok.decode(rb.completion_ids[ok[0]], skip_special_tokens=True)
    rb.reward = [0.0] * rb.size
    for packed in (False, True):
        batch = make_batch(rb, tok.pad_token_id, dev)
        assert batch.completion_mask.tolist() == [m + [0] * (batch.completion_mask.shape[1] - len(m))
                                                  for m in rb.completion_masks]
        with torch.no_grad():
            logp, _ = forward_logprobs(model, batch, temperature=0.7, autocast=False, packed=packed)
        on = batch.completion_mask.bool()
        torch.testing.assert_close(logp[on], batch.sampler_logp[on], rtol=0, atol=1e-4)
        off = (~on) & (batch.attention_mask[:, batch.prompt_len:].bool())  # the tools' tokens
        if not packed:  # the trainer's log-probs of a tool's tokens are not the recorded 0.0: masked out
            assert off.any() and (logp[off] - batch.sampler_logp[off]).abs().max() > 1e-3
    # each completion depends on its prompt's key and seed only
    again = sampler.sample(prompts[1:], seed=1, keys=[1, 2])
    assert again.completion_ids == rb.completion_ids[4:] and again.turns[0][0]["start"] == 0
    assert sampler.sample(prompts, seed=2).completion_ids != rb.completion_ids
    m = tool_metrics(rb)
    assert m["tools/call_rate"] == pytest.approx(len({i for i, t in enumerate(rb.turns) if "status" in t[0]}) / 12)
    assert m["tools/tokens_inserted"] == pytest.approx(sum(len(x) - sum(x) for x in rb.completion_masks) / 12)


def test_max_turns_and_the_token_budget_end_a_completion(tools_model):
    from grpo_kit.train.models import encode_prompt

    _, tok, _, sampler = _sampler(tools_model, max_new_tokens=9, temperature=0.7)
    rb = sampler.sample([encode_prompt(tok, "12*34=<calculator>")], seed=1)
    _check_record(rb, tok)
    assert all(len(c) <= 9 for c in rb.completion_ids)  # sampled + inserted within the budget
    assert any(r == "length" for r in rb.finish_reasons)
    # a call past max_turns is recorded, not run, and ends the completion
    _, tok, _, none = _sampler(tools_model, max_turns=0, temperature=0.7)
    rb = none.sample([encode_prompt(tok, "12*34=<calculator>")], seed=1)
    calls = [t for t in rb.turns if "status" in t[0]]
    assert calls and all(len(t) == 1 and t[0]["status"] == "not_run" and t[0]["inserted"][0] == t[0]["inserted"][1]
                         for t in calls)
    assert all(ids[-1:] == tok.convert_tokens_to_ids(["</calculator>"]) for ids, t in zip(rb.completion_ids, rb.turns)
               if "status" in t[0])
    assert tool_metrics(rb)["tools/not_run_rate"] == 1.0


# ------------------------------------------------------------------------------ training
def _train_config(tmp_path, model, algo: dict, steps=2):
    import yaml

    from grpo_kit.demo import tools_demo_config

    data = tools_demo_config()
    data["model"]["path"] = str(model)
    data["algorithm"] = algo
    data["train"].update(steps=steps, prompts_per_step=4, save_every=100, samples_every=1, torch_threads=1)
    data["sampling"]["n"] = 4
    data["run"]["progress"] = False
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("algo", [
    {"type": "grpo", "loss_agg": "token_mean", "kl": {"beta": 0.04}, "tis_cap": 2.0},
    {"type": "ppo", "kl": {"beta": 0.01}, "tis_cap": 2.0},
], ids=["grpo", "ppo"])
def test_grpo_and_ppo_train_on_multiturn_records(tmp_path, tools_model, algo):
    """Two steps each; the sampler-vs-trainer log-prob gap is measured on sampled tokens only (with
    a tool's tokens in the mask it would be ~1, their sampler log-prob being 0)."""
    from grpo_kit.cli import main
    from grpo_kit.train.logger import read_metrics

    cfg = _train_config(tmp_path, tools_model, algo)
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "run")]) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["tools/call_rate"] > 0 and r["tools/tokens_inserted"] > 0
        assert r["rollout/logprob_abs_diff"] < 1e-4, r["rollout/logprob_abs_diff"]
        assert all(v == v for k, v in r.items() if isinstance(v, float)), r  # no NaN
    if algo["type"] == "ppo":
        assert "loss/value" in rows[0]
    samples = [json.loads(x) for x in (tmp_path / "run" / "samples" / "step-000001.jsonl").read_text().splitlines()]
    called = [s for s in samples if s["tool_calls"]]
    assert called and all(s["tool_calls"][0]["output"] in s["completion"] for s in called)


def test_the_demo_raises_the_call_rate_and_the_reward(tmp_path, tools_model):
    """25 steps of the tools demo's config from the test model (warm-started with half its
    examples calling): the call rate and the reward rise (the full demo: the README)."""
    from grpo_kit.cli import main
    from grpo_kit.train.logger import read_metrics

    cfg = _train_config(tmp_path, tools_model, {"type": "grpo", "advantage": "grpo", "loss_agg": "token_mean",
                                                "kl": {"beta": 0.0}}, steps=25)
    text = cfg.read_text().replace("prompts_per_step: 4", "prompts_per_step: 16").replace("n: 4", "n: 8")
    cfg.write_text(text)
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "run")]) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    first, last = rows[:3], rows[-3:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    assert mean(first, "tools/call_rate") < 0.8 <= mean(last, "tools/call_rate"), [r["tools/call_rate"] for r in rows]
    assert mean(last, "reward/mean") > mean(first, "reward/mean") + 0.2, [r["reward/mean"] for r in rows]
