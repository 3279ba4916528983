"""process_reward on tiny PRMs the tests build: per-step probabilities equal direct forward passes
(token-classification and causal-LM heads), each aggregation, the chat template, batching,
hostile text, setting errors."""

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from grpo_kit.registry import get_reward, reward_scope  # noqa: E402
from rewards.process import AGGREGATIONS, process_reward, split_steps, step_probabilities  # noqa: E402
from tiny_models import build_tiny_prm  # noqa: E402

TAG = " ки\n"
TRACES = [
    "2 + 2 = 4\n\nthe answer is 4",
    "the cat sat on the mat\n\n2 + 2 = 5\n\nthe answer is 5\n\n",
    "4",
    "yes yes yes\n\n\n\nno no\n\ngood",
]


def load(path, cls):
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(path)
    return tok, cls.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def tc(tmp_path_factory):  # a token-classification PRM (Qwen2.5-Math-PRM's shape), with a chat template
    path = build_tiny_prm(tmp_path_factory.mktemp("prm_tc"))
    return (str(path), *load(path, transformers.AutoModelForTokenClassification))


@pytest.fixture(scope="module")
def lm(tmp_path_factory):  # a causal-LM PRM (Math-Shepherd's), no chat template
    path = build_tiny_prm(tmp_path_factory.mktemp("prm_lm"), head="causal_lm", chat_template=False)
    return (str(path), *load(path, transformers.AutoModelForCausalLM))


def direct(net, tok, text, read, *, add_special_tokens=True):
    """Per step, one unpadded forward pass of the prefix that ends at that step's tag: the reference."""
    ids = tok(text, add_special_tokens=add_special_tokens)["input_ids"]
    tag = tok.convert_tokens_to_ids("ки")
    out = []
    with torch.no_grad():
        for k in [i for i, t in enumerate(ids) if t == tag]:
            out.append(read(net(input_ids=torch.tensor([ids[:k + 1]])).logits[0, -1]))
    return out


def tc_read(logits):  # label 1 of the two-label head
    return logits.softmax(-1)[1].item()


def lm_read(tok):
    good, bad = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    return lambda logits: logits[[good, bad]].softmax(-1)[0].item()


def tagged(trace):
    return TAG.join(split_steps(trace, "\n\n")) + TAG


def test_token_classification_steps_equal_direct_passes(tc):
    path, tok, net = tc
    got = step_probabilities(TRACES, model=path, step_tag=TAG)
    for trace, steps in zip(TRACES, got):
        assert len(steps) == len(split_steps(trace, "\n\n"))
        assert steps == pytest.approx(direct(net, tok, tagged(trace), tc_read), abs=1e-5)
    assert len({round(p, 3) for s in got for p in s}) > 4  # the tiny PRM tells steps apart


def test_causal_lm_steps_equal_direct_passes(lm):
    path, tok, net = lm
    got = step_probabilities(TRACES, model=path, step_tag=TAG)  # head auto: causal_lm
    for trace, steps in zip(TRACES, got):
        assert steps == pytest.approx(direct(net, tok, tagged(trace), lm_read(tok)), abs=1e-5)
    # other good/bad tokens read other logits
    other = step_probabilities(TRACES[:1], model=path, step_tag=TAG, good_token="yes", bad_token="no")
    assert other[0] != pytest.approx(got[0], abs=1e-3)


AGG_CASES = [
    # (aggregation, the reference from the step probabilities)
    ("min", min),
    ("last", lambda p: p[-1]),
    ("mean", lambda p: sum(p) / len(p)),
    ("product", math.prod),
]


@pytest.mark.parametrize("aggregation,ref", AGG_CASES)
def test_aggregations(tc, aggregation, ref):
    path = tc[0]
    steps = step_probabilities(TRACES, model=path, step_tag=TAG)
    assert process_reward(TRACES, model=path, step_tag=TAG, aggregation=aggregation) == pytest.approx(
        [ref(p) for p in steps], abs=1e-9)


def test_aggregations_differ(tc):
    # on a 3-step trace the four modes give four different scores: each switch acts
    scores = {a: process_reward(TRACES[1:2], model=tc[0], step_tag=TAG, aggregation=a)[0] for a in AGGREGATIONS}
    assert len({round(v, 6) for v in scores.values()}) == 4, scores


def test_chat_template_for_a_chat_prm(tc):
    path, tok, net = tc
    prompt = "what is 2 + 2 ?"
    got = step_probabilities(TRACES[:1], [prompt], model=path, step_tag=TAG)[0]
    rendered = tok.apply_chat_template([{"role": "user", "content": prompt},
                                        {"role": "assistant", "content": tagged(TRACES[0])}], tokenize=False)
    assert rendered.startswith("<|user|> what is 2 + 2 ? <|end|> <|assistant|> 2 + 2 = 4 ки")
    assert got == pytest.approx(direct(net, tok, rendered, tc_read, add_special_tokens=False), abs=1e-5)
    plain = direct(net, tok, prompt + " " + tagged(TRACES[0]), tc_read)
    assert got != pytest.approx(plain, abs=1e-4)  # the template changed the input
    # a system prompt goes first, through the template
    sys_got = step_probabilities(TRACES[:1], [prompt], model=path, step_tag=TAG, system_prompt="please solve")[0]
    with_sys = tok.apply_chat_template([{"role": "system", "content": "please solve"},
                                        {"role": "user", "content": prompt},
                                        {"role": "assistant", "content": tagged(TRACES[0])}], tokenize=False)
    assert sys_got == pytest.approx(direct(net, tok, with_sys, tc_read, add_special_tokens=False), abs=1e-5)


def test_without_template_prompt_and_trace_are_joined(lm):
    path, tok, net = lm
    got = step_probabilities(TRACES[:1], ["what is 2 + 2 ?"], model=path, step_tag=TAG)[0]
    assert got == pytest.approx(direct(net, tok, "what is 2 + 2 ? " + tagged(TRACES[0]), lm_read(tok)), abs=1e-5)


def test_batching_invariance(tc):
    path = tc[0]
    one = process_reward(TRACES, model=path, step_tag=TAG, batch_size=1)
    assert process_reward(TRACES, model=path, step_tag=TAG, batch_size=3) == pytest.approx(one, abs=1e-5)
    assert process_reward(TRACES[::-1], model=path, step_tag=TAG, batch_size=8)[::-1] == pytest.approx(one, abs=1e-5)


def test_separator_changes_the_steps(tc):
    # " = " splits the first trace elsewhere; "\n" gives its 2 steps (the blank one dropped)
    path = tc[0]
    assert len(step_probabilities(TRACES[:1], model=path, step_tag=TAG, step_separator=" = ")[0]) == 2
    assert len(step_probabilities(TRACES[:1], model=path, step_tag=TAG, step_separator="\n")[0]) == 2
    assert len(step_probabilities(["a b c"], model=path, step_tag=TAG)[0]) == 1  # no separator: one step


def test_tag_written_by_the_model_is_removed(tc):
    path = tc[0]
    clean = process_reward(["2 + 2 = 4\n\nthe answer is 4"], model=path, step_tag=TAG)
    assert process_reward(["2 + 2 = 4 ки ки\n\nthe answer ки is 4"], model=path, step_tag=TAG) == pytest.approx(
        clean, abs=1e-6)


def test_steps_beyond_max_length_get_zero(tc):
    path = tc[0]
    trace = "\n\n".join(["the cat sat on the mat"] * 5)  # 5 steps of 7 tokens each (with the tag)
    full = step_probabilities([trace], model=path, step_tag=TAG)[0]
    cut = step_probabilities([trace], model=path, step_tag=TAG, max_length=16)[0]
    assert cut[:2] == pytest.approx(full[:2], abs=1e-5) and cut[2:] == [0.0, 0.0, 0.0]
    assert process_reward([trace], model=path, step_tag=TAG, max_length=16, aggregation="mean")[0] < 0.41


SETTING_ERRORS = [
    # (settings, error fragment)
    ({"step_tag": TAG}, "the setting 'model' is required"),  # no model
    ({"model": "x"}, "the setting 'step_tag' is required"),  # no tag
    ({"model": "x", "step_tag": TAG, "aggregation": "max"}, "unknown aggregation 'max'; valid: min, last, mean, product"),
    ({"model": "x", "step_tag": TAG, "head": "value"}, "unknown head 'value'"),  # no such head
    ({"model": "x", "step_tag": TAG, "dtype": "int8"}, "unknown dtype 'int8'"),  # no such dtype
    ({"model": "x", "step_tag": TAG, "step_separator": ""}, "step_separator must not be empty"),
]


@pytest.mark.parametrize("settings,fragment", SETTING_ERRORS)
def test_setting_errors(settings, fragment):
    with pytest.raises(ValueError, match=fragment):
        process_reward(["4"], **settings)


def test_tag_and_label_errors(tc, lm):
    with pytest.raises(ValueError, match="step_tag='the cat' is 2 tokens"):
        process_reward(["4"], model=tc[0], step_tag="the cat")
    with pytest.raises(ValueError, match="label_index=2 is out of range"):
        process_reward(["4"], model=tc[0], step_tag=TAG, label_index=2)
    with pytest.raises(ValueError, match="good_token='the cat' is 2 tokens"):
        process_reward(["4"], model=lm[0], step_tag=TAG, good_token="the cat")


def test_registered_with_batch_scope(tc):
    assert reward_scope(get_reward("process_reward")) == "batch"
    assert process_reward([], model=tc[0], step_tag=TAG) == []
