"""The tiny demo model: built without a hub, reloads with the Auto classes, knows the format
(digits then <eos>) but not the sums."""

import json

import pytest
import torch

from grpo_kit.demo import MARKER, TOKENS, build_tiny_model

FACTS = [(a, b) for a in range(10) for b in range(10)]
PROMPTS = [f"{a}+{b}=" for a, b in FACTS]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # 30 warm-start steps (not 200) keep the test fast; the format is learned well before that
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0, warm_start_steps=30)


@pytest.fixture(scope="module")
def loaded(model_dir):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return model, PreTrainedTokenizerFast.from_pretrained(model_dir)


def test_marker_and_shape(model_dir, loaded):
    model, _ = loaded
    recipe = json.loads((model_dir / MARKER).read_text())
    assert recipe["tokens"] == TOKENS and recipe["warm_start"]["steps"] == 30
    cfg = model.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads) == (14, 64, 2, 1)
    assert cfg.tie_word_embeddings and cfg.initializer_range == 0.1
    assert model.model.layers[0].self_attn.head_dim == 32  # a head size vLLM's CPU attention accepts
    assert 100_000 < recipe["parameters"] < 150_000


def test_tokenizer_round_trip(model_dir, loaded):
    from transformers import AutoTokenizer

    _, tok = loaded
    auto = AutoTokenizer.from_pretrained(model_dir)  # Qwen2Tokenizer in transformers 5: same ids
    text = "12+7=19<eos>"
    assert tok(text).input_ids == [3, 4, 12, 9, 13, 3, 11, 1]
    assert auto(text).input_ids == tok(text).input_ids
    assert auto(PROMPTS).input_ids == tok(PROMPTS).input_ids
    assert len(auto) == len(tok) == len(TOKENS)  # no extra unk token outside the embedding
    for t in (tok, auto):
        assert (t.pad_token_id, t.eos_token_id, t.padding_side) == (0, 1, "left")
        assert t.decode([3, 4, 1], skip_special_tokens=True) == "12"  # no spaces between digits
        assert t.decode(t("3+5=8").input_ids) == "3+5=8"
        assert t.apply_chat_template([{"role": "user", "content": "3+5="}], tokenize=False) == "3+5="
    with pytest.raises(Exception):  # a character outside the vocabulary is an error, not a silent unk
        tok("3x5=")


def _greedy(loaded, prompts):
    model, tok = loaded
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    return out[:, enc.input_ids.shape[1]:].tolist()  # [B, <=3] new tokens


def test_generates_digits_then_eos(loaded):
    _, tok = loaded
    digits = set(tok.convert_tokens_to_ids(list("0123456789")))
    for new in _greedy(loaded, ["3+5="] + PROMPTS[::7]):
        assert tok.eos_token_id in new, new
        answer = new[: new.index(tok.eos_token_id)]
        assert 1 <= len(answer) <= 2 and set(answer) <= digits, new


def test_format_learned_not_sums(loaded):
    _, tok = loaded
    texts = tok.batch_decode(_greedy(loaded, PROMPTS), skip_special_tokens=True)
    accuracy = sum(t == str(a + b) for t, (a, b) in zip(texts, FACTS)) / len(FACTS)
    assert accuracy <= 0.3, texts


def test_cli(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_tiny_model.py"
    spec = importlib.util.spec_from_file_location("make_tiny_model", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path / "m"), "--seed", "1", "--warm-start-steps", "2"])
    assert "124,352 parameters" in capsys.readouterr().out
    assert json.loads((tmp_path / "m" / MARKER).read_text())["seed"] == 1
