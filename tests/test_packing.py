"""Padding-free updates (``train.packing``), micro-batches balanced by tokens
(``train.micro_batch_tokens``) and fused log-probs (``train.logprobs: fused``): packed or fused
log-probs, entropies and gradients equal the padded logits path's, the model sees one row without
padding, the fused head never outputs a vocabulary-wide tensor, and a training step is the same
every way.
Under torchrun: tests/test_distributed.py (a packed, token-balanced config among the one-step ones)."""

from __future__ import annotations

import pytest
import torch

from grpo_kit.train.batch import Batch, forward_logprobs


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from grpo_kit.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"), seed=0, warm_start_steps=30)


def _ragged_batch() -> Batch:
    """6 sequences, prompts of 1-5 tokens (left-padded to 5), completions of 1-7 (right-padded to 7)."""
    g = torch.Generator().manual_seed(0)
    n, P, T = 6, 5, 7
    prompt_lens, completion_lens = [5, 3, 4, 2, 5, 1], [7, 1, 4, 7, 3, 5]
    att = torch.zeros(n, P + T, dtype=torch.long)
    cmask = torch.zeros(n, T, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_lens, completion_lens)):
        att[i, P - p:P + c] = 1
        cmask[i, :c] = 1
    ids = torch.randint(2, 14, (n, P + T), generator=g) * att
    return Batch(ids, att, ids[:, P:], cmask, torch.zeros(1, n), torch.zeros(n, dtype=torch.bool), None, P)


def test_packed_logprobs_entropies_and_gradients_equal_the_padded_ones(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    batch = _ragged_batch()
    m = batch.completion_mask
    seen, out = [], {}
    hook = model.register_forward_pre_hook(lambda mod, args, kw: seen.append(kw["input_ids"].shape), with_kwargs=True)
    for packed in (False, True):
        model.zero_grad()
        lp, ent = forward_logprobs(model, batch, temperature=0.7, autocast=False, with_entropy=True,
                                   entropy_grad=True, packed=packed)
        ((lp * m).sum() + (ent * m).sum()).backward()
        out[packed] = lp.detach(), ent.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])
    hook.remove()
    assert seen == [torch.Size([6, 12]), torch.Size([1, int(batch.lengths.sum())])]  # one row, no padding
    (lp0, e0, g0), (lp1, e1, g1) = out[False], out[True]
    assert float(((lp1 - lp0) * m).abs().max()) <= 1e-5
    assert float(((e1 - e0) * m).abs().max()) <= 1e-5
    assert float((g1 - g0).abs().max()) <= 1e-5 * float(g0.abs().max())  # measured 2e-7 relative
    assert float((lp1 * (1 - m)).abs().max()) == 0  # nothing outside the completions


def test_a_batch_without_left_padding_runs_with_the_causal_mask_alone(tiny_model):
    """Prompts of one length (the demo's): the padded path passes no attention mask (the causal one
    is exact, right padding comes after every real token), and its log-probs, entropies and
    gradients equal the model's with the explicit mask, and the packed path's."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ragged = _ragged_batch()
    att = ragged.attention_mask.clone()
    att[:, :ragged.prompt_len] = 1  # every prompt 5 tokens; completions still ragged
    batch = Batch(ragged.input_ids.clamp(min=2) * att, att, ragged.completion_ids, ragged.completion_mask,
                  ragged.rewards, ragged.truncated, None, ragged.prompt_len)
    masks = []
    hook = model.register_forward_pre_hook(lambda mod, args, kw: masks.append(kw.get("attention_mask")),
                                           with_kwargs=True)
    got = _grads(model, batch)
    hook.remove()
    assert masks == [None]
    m = batch.completion_mask
    model.zero_grad()  # the explicit mask, by hand
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=batch.input_ids, attention_mask=att, position_ids=pos).logits[:, 4:11] / 0.7
    lp = torch.log_softmax(logits, -1).gather(-1, batch.completion_ids[..., None])[..., 0]
    ent = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    ((lp * m).sum() + (ent.detach() * m).sum()).backward()
    want = lp.detach(), ent.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert float(((got[0] - want[0]) * m).abs().max()) <= 1e-5
    assert float(((got[1] - want[1]) * m).abs().max()) <= 1e-5
    assert float((got[2] - want[2]).abs().max()) <= 1e-5 * float(want[2].abs().max())
    packed = _grads(model, batch, packed=True)
    assert float(((packed[0] - got[0]) * m).abs().max()) <= 1e-5


def _grads(model, batch, **kw):
    model.zero_grad()
    m = batch.completion_mask
    lp, ent = forward_logprobs(model, batch, temperature=0.7, autocast=False, with_entropy=True, **kw)
    ((lp * m).sum() + (ent * m).sum()).backward()
    return lp.detach(), ent.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("packed", [False, True])
def test_fused_logprobs_entropies_and_gradients_equal_the_logits_path(tiny_model, packed):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    batch = _ragged_batch()
    m = batch.completion_mask
    widths = []
    hook = model.get_output_embeddings().register_forward_hook(lambda mod, args, out: widths.append(out.shape[-1]))
    lp0, e0, g0 = _grads(model, batch, entropy_grad=True, packed=packed)
    lp1, e1, g1 = _grads(model, batch, entropy_grad=True, packed=packed, fused=True)
    hook.remove()
    assert widths == [model.config.vocab_size, 2]  # fused: [.., 2] (log-prob, entropy), never [.., V]
    assert float(((lp1 - lp0) * m).abs().max()) <= 1e-5  # measured 5e-7
    assert float(((e1 - e0) * m).abs().max()) <= 1e-5
    assert float((g1 - g0).abs().max()) <= 1e-5 * float(g0.abs().max())  # the tied head/embedding too
    assert float(((lp1 - lp0) * m).abs().max()) > 0 or packed  # a different computation, not the same call
    _, e2, g2 = _grads(model, batch, entropy_grad=False, packed=packed, fused=True)  # entropy as a metric only
    assert not e2.requires_grad and float((e2 - e1).abs().max()) == 0
    assert float((g2 - g1).abs().max()) > 1e-3 * float(g1.abs().max())  # no entropy term in the gradient now
    assert type(model.get_output_embeddings()).forward is torch.nn.Linear.forward
    assert "forward" not in vars(model.get_output_embeddings())  # the head's own forward is back


def test_fused_under_lora_and_refused_with_an_adapted_head(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from grpo_kit.errors import ConfigError
    from grpo_kit.lora import AdapterDisabled

    batch = _ragged_batch()
    m = batch.completion_mask
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    lp0, e0, g0 = _grads(model, batch, entropy_grad=True)
    lp1, e1, g1 = _grads(model, batch, entropy_grad=True, fused=True)
    assert len(g0) == len(g1) and float((g1 - g0).abs().max()) <= 1e-5 * float(g0.abs().max())  # adapter grads only
    assert float(((lp1 - lp0) * m).abs().max()) <= 1e-5
    with torch.no_grad():  # the reference: the same model with the adapter off
        ref0 = forward_logprobs(AdapterDisabled(model), batch, temperature=0.7, autocast=False)[0]
        ref1 = forward_logprobs(AdapterDisabled(model), batch, temperature=0.7, autocast=False, fused=True)[0]
    assert float(((ref1 - ref0) * m).abs().max()) <= 1e-5 and float(((ref0 - lp0) * m).abs().max()) > 1e-3
    head = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head"]))
    with pytest.raises(ConfigError, match="train.logprobs: fused needs the model's output head to be a plain nn.Linear"):
        forward_logprobs(head, batch, temperature=0.7, autocast=False, fused=True)


@pytest.mark.parametrize("micro, budget, lengths, want", [
    (8, None, [5, 5, 5], [[0, 1, 2]]),  # no budget: by sequence count only
    (2, None, [5, 5, 5], [[0, 1], [2]]),
    (8, 10, [5, 5, 5], [[0, 1], [2]]),  # 5 + 5 fits 10, a third would not
    (8, 10, [3, 9, 2, 2], [[0], [1], [2, 3]]),  # 3 + 9 > 10
    (8, 4, [9, 1], [[0], [1]]),  # a row longer than the budget goes alone
    (1, 100, [5, 5], [[0], [1]]),  # both limits apply
])
def test_micro_batches_by_tokens(micro, budget, lengths, want):
    from grpo_kit.train.update import _split

    rows = torch.arange(len(lengths))
    assert [c.tolist() for c in _split(rows, micro, budget, torch.tensor(lengths))] == want


def test_a_step_is_the_same_packed_and_token_balanced(tmp_path, tiny_model):
    """One GRPO step (KL, 2 epochs, minibatches) with padding, then packed with micro-batches of
    at most 24 tokens: the same weights and metrics within 1e-5."""
    from grpo_kit.train.trainer import Trainer
    from tests.test_train import small_config
    from grpo_kit.train.config import resolve_train_config

    weights, rows = {}, {}
    for name, sets in {"padded": [], "packed": ["train.packing=true", "train.micro_batch_tokens=24"],
                       "fused": ["train.logprobs=fused"]}.items():
        cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)), [
            "train.steps=1", "algorithm.epochs=2", "train.minibatch_size=16", "train.micro_batch_size=8",
            "optim.lr=1e-4", *sets])
        tr = Trainer(cfg, tmp_path / name)
        try:
            rows[name] = tr.train_step()
        finally:
            tr.close()
        weights[name] = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    for other in ("packed", "fused"):
        diff = max(float((weights["padded"][k] - weights[other][k]).abs().max()) for k in weights["padded"])
        assert diff <= 1e-5, (other, diff)  # AdamW's 4 steps of lr 1e-4 moved the weights by far more (checked below)
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    assert max(float((weights["padded"][k] - base[k]).abs().max()) for k in base) > 1e-4
    for k, v in rows["padded"].items():
        if isinstance(v, float) and not k.startswith(("time/", "tokens_per_s")):
            for other in ("packed", "fused"):
                assert v == pytest.approx(rows[other][k], rel=1e-4, abs=1e-6), (other, k)
