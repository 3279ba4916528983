"""The learned reward on a tiny classifier built by the test: same scores as a direct forward
pass, batching invariance, chat template, truncation, caching, setting errors."""

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from grpo_kit.registry import get_reward, reward_scope  # noqa: E402
from rewards import model as model_module  # noqa: E402
from rewards.model import reward_model  # noqa: E402
from tiny_models import build_tiny_classifier  # noqa: E402

COMPLETIONS = [
    "4",
    "the answer is 4",
    "the cat sat on the mat and the dog sat on the mat",
    "<think> 2 + 2 = 4 </think> <answer> 4 </answer>",
    "no",
    "yes yes yes yes yes yes yes yes yes yes yes yes",
    "hello world",
    "",
    "a b c d",  # unknown words become <unk>
]
PROMPTS = ["what is 2 + 2 ?"] * len(COMPLETIONS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_classifier(tmp_path_factory.mktemp("rm"))
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(path)
    net = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    return str(path), tokenizer, net


@pytest.fixture(scope="module")
def tiny_no_template(tmp_path_factory):
    path = build_tiny_classifier(tmp_path_factory.mktemp("rm_plain"), chat_template=False)
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(path)
    net = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    return str(path), tokenizer, net


def direct(net, tokenizer, text, *, add_special_tokens=True, max_length=None):
    """One unpadded forward pass: the reference score."""
    ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    if max_length is not None:
        ids = ids[:max_length]
    if not ids:  # an empty text scores as a lone pad token, as the batched call pads it
        ids = [tokenizer.pad_token_id]
    with torch.no_grad():
        return net(input_ids=torch.tensor([ids])).logits[0, 0].item()


def test_scores_equal_a_direct_forward_pass(tiny):
    path, tokenizer, net = tiny
    scores = reward_model(COMPLETIONS, model=path)
    expected = [direct(net, tokenizer, c) for c in COMPLETIONS]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 4) for s in scores)) > 3  # the tiny model tells texts apart


def test_batching_invariance(tiny):
    # batch size 1 vs 8 vs everything at once, and the input order, do not change a score
    path, _, _ = tiny
    for prompt in (PROMPTS, None):
        one = reward_model(COMPLETIONS, prompt=prompt, model=path, batch_size=1)
        eight = reward_model(COMPLETIONS, prompt=prompt, model=path, batch_size=8)
        three = reward_model(COMPLETIONS, prompt=prompt, model=path, batch_size=3)
        backwards = reward_model(COMPLETIONS[::-1], prompt=prompt, model=path, batch_size=4)[::-1]
        assert eight == pytest.approx(one, abs=1e-5)
        assert three == pytest.approx(one, abs=1e-5)
        assert backwards == pytest.approx(one, abs=1e-5)


def test_chat_template_is_applied(tiny):
    path, tokenizer, net = tiny
    scores = reward_model(COMPLETIONS[:4], prompt=PROMPTS[:4], model=path)
    rendered = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}, {"role": "assistant", "content": c}], tokenize=False
        )
        for p, c in zip(PROMPTS, COMPLETIONS[:4])
    ]
    assert rendered[0] == "<|user|> what is 2 + 2 ? <|end|> <|assistant|> 4 <|end|> "
    assert scores == pytest.approx([direct(net, tokenizer, r, add_special_tokens=False) for r in rendered], abs=1e-5)
    concatenated = [direct(net, tokenizer, p + c) for p, c in zip(PROMPTS, COMPLETIONS[:4])]
    assert scores != pytest.approx(concatenated, abs=1e-3)


PROMPT_FORMS = [
    # (prompt, completion) pairs that must score the same as ("what is 2 + 2 ?", "4")
    ("what is 2 + 2 ?", "4"),  # plain strings
    ([{"role": "user", "content": "what is 2 + 2 ?"}], "4"),  # a chat prompt
    ({"role": "user", "content": "what is 2 + 2 ?"}, [{"role": "assistant", "content": "4"}]),  # one message
]


@pytest.mark.parametrize("prompt,completion", PROMPT_FORMS)
def test_prompt_and_completion_forms(tiny, prompt, completion):
    path, _, _ = tiny
    reference = reward_model(["4"], prompt=["what is 2 + 2 ?"], model=path)
    assert reward_model([completion], prompt=[prompt], model=path) == pytest.approx(reference, abs=1e-6)
    assert reward_model([completion], prompts=[prompt], model=path) == pytest.approx(reference, abs=1e-6)  # TRL


def test_system_prompt_goes_through_the_template(tiny):
    path, tokenizer, net = tiny
    messages = [{"role": "system", "content": "please solve"}, {"role": "user", "content": "what is 2 + 2 ?"}]
    rendered = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": "4"}], tokenize=False)
    expected = direct(net, tokenizer, rendered, add_special_tokens=False)
    assert reward_model(["4"], prompt=[messages], model=path) == pytest.approx([expected], abs=1e-5)


def test_without_chat_template_prompt_and_completion_are_joined(tiny_no_template):
    path, tokenizer, net = tiny_no_template
    scores = reward_model(["the answer is 4"], prompt=["what is 2 + 2 ? "], model=path)
    assert scores == pytest.approx([direct(net, tokenizer, "what is 2 + 2 ? the answer is 4")], abs=1e-5)


def test_truncation_to_max_length(tiny):
    path, tokenizer, net = tiny
    text = COMPLETIONS[2]
    assert reward_model([text], model=path, max_length=3) == pytest.approx(
        [direct(net, tokenizer, text, max_length=3)], abs=1e-5
    )


def test_tokenizer_ids_are_kept(tiny):
    # transformers 5's AutoTokenizer would load a Qwen2Tokenizer and change the ids; the reward does not
    path, tokenizer, _ = tiny
    _, loaded = model_module._load(path, "cpu", "auto")
    text = "the answer is 4 hello world"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.unk_token_id not in loaded(text)["input_ids"]


def test_model_is_loaded_once(tiny):
    path, _, _ = tiny
    reward_model(["4"], model=path, device="cpu")
    cached = model_module._LOADED[(path, "cpu", "auto")]
    reward_model(["5"], model=path, device="cpu")
    assert model_module._LOADED[(path, "cpu", "auto")] is cached
    assert reward_model([], model=path) == []


def test_label_index_and_dtype(tiny):
    path, _, _ = tiny
    full = reward_model(["4"], model=path, dtype="float32")
    assert full == pytest.approx(reward_model(["4"], model=path), abs=1e-6)
    bf16 = reward_model(["4"], model=path, dtype="bfloat16")
    assert isinstance(bf16[0], float) and bf16 == pytest.approx(full, abs=0.1)


SETTING_ERRORS = [
    # (settings, error fragment)
    ({}, "the setting 'model' is required"),  # no model
    ({"model": "x", "dtype": "float64"}, "unknown dtype 'float64'"),  # unsupported dtype
    ({"model": "x", "batch_size": 0}, "'batch_size' must be a positive integer"),  # no batch
    ({"model": "x", "max_length": -1}, "'max_length' must be a positive integer"),  # no room
]


@pytest.mark.parametrize("settings,fragment", SETTING_ERRORS)
def test_setting_errors(settings, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        reward_model(["4"], **settings)
    assert "reward_model" in str(info.value)


def test_label_index_out_of_range(tiny):
    path, _, _ = tiny
    with pytest.raises(ValueError, match="label_index=1 is out of range"):
        reward_model(["4"], model=path, label_index=1)


def test_prompt_count_mismatch(tiny):
    path, _, _ = tiny
    with pytest.raises(ValueError, match="1 prompts for 2 completions"):
        reward_model(["4", "5"], prompt=["q"], model=path)


def test_scope_is_batch():
    assert reward_scope(get_reward("reward_model")) == "batch"


def test_importing_rewards_does_not_import_torch():
    # scorer workers import every reward module; torch must stay out until reward_model runs
    code = "import sys, rewards; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


def test_empty_completion_without_prompt(tiny):
    # no tokens at all: scored as one pad token, the same alone and in a batch
    path, tokenizer, net = tiny
    alone = reward_model([""], model=path, batch_size=1)
    batched = reward_model(["", "hello world", "4"], model=path, batch_size=8)
    assert alone == pytest.approx([direct(net, tokenizer, "")], abs=1e-5)
    assert batched[0] == pytest.approx(alone[0], abs=1e-5)
