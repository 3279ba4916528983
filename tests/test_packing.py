"""Padding-free updates (``train.packing``), micro-batches balanced by tokens
(``train.micro_batch_tokens``), fused log-probs (``train.logprobs: fused``) and shared prompts
(``train.shared_prefix``): packed, fused or prefix-shared log-probs, entropies and gradients equal
the padded logits path's, the model sees one row without padding, the fused head never outputs a
vocabulary-wide tensor, each distinct prompt is computed once, and a training step is the same
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
    assert seen == [torch.Size([6, 11]), torch.Size([1, int(batch.lengths.sum())])]  # one row, no padding
    # (padded: [6, 12] less the last column, which predicts nothing)
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


def _grouped_batch(prompt_lens: list[int], G: int, P: int | None = None, T: int = 6) -> Batch:
    """``len(prompt_lens)`` prompts (left-padded to ``P``), ``G`` completions of each (1..T tokens,
    right-padded to T), stored group by group as the trainer's batch is."""
    g = torch.Generator().manual_seed(1)
    P = P or max(prompt_lens)
    n = len(prompt_lens) * G
    att, cmask = torch.zeros(n, P + T, dtype=torch.long), torch.zeros(n, T, dtype=torch.long)
    ids = torch.randint(2, 14, (n, P + T), generator=g)
    for j, p in enumerate(prompt_lens):
        prompt = torch.randint(2, 14, (P,), generator=g)
        for i in range(j * G, (j + 1) * G):
            c = int(torch.randint(1, T + 1, (1,), generator=g))
            att[i, P - p:P + c], cmask[i, :c], ids[i, :P] = 1, 1, prompt
    ids = ids * att
    return Batch(ids, att, ids[:, P:], cmask, torch.zeros(len(prompt_lens), G), torch.zeros(n, dtype=torch.bool), None, P)


@pytest.mark.parametrize("prompt_lens, G", [
    ([5, 3, 1], 4),  # left padding, a prompt of one token (its shared columns all padding)
    ([4, 4], 8),  # one length: no mask at all
    ([1, 1], 3),  # P = 1: a masked column is put before it (the same two calls on every rank)
])
@pytest.mark.parametrize("fused", [False, True])
def test_shared_prefix_computes_each_prompt_once_and_equals_the_full_forward(tiny_model, prompt_lens, G, fused):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    batch = _grouped_batch(prompt_lens, G)
    m, (N, P), T = batch.completion_mask, batch.input_ids.shape, batch.completion_ids.shape[1]
    P -= T
    calls = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kw: calls.append((tuple(kw["input_ids"].shape), kw.get("past_key_values") is not None)),
        with_kwargs=True)
    full = _grads(model, batch, entropy_grad=True, fused=fused)
    shared = _grads(model, batch, entropy_grad=True, fused=fused, shared_prefix=True)
    hook.remove()
    U, L = len(prompt_lens), max(P - 1, 1)  # distinct prompts; the shared columns
    # the full forward, then: the shared columns once per prompt, and each completion from the cache
    assert calls == [((N, P + T - 1), False), ((U, L), False), ((N, T), True)]
    assert float(((shared[0] - full[0]) * m).abs().max()) <= 1e-5  # measured <= 3e-6
    assert float(((shared[1] - full[1]) * m).abs().max()) <= 1e-5
    assert float((shared[2] - full[2]).abs().max()) <= 1e-5 * float(full[2].abs().max())  # measured 4e-7 relative


def test_shared_prefix_under_lora_and_its_refusals(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from grpo_kit.lora import AdapterDisabled
    from grpo_kit.train.config import resolve_train_config
    from tests.test_train import small_config

    batch = _grouped_batch([4, 2], 4)
    m = batch.completion_mask
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    full, shared = _grads(model, batch, entropy_grad=True), _grads(model, batch, entropy_grad=True, shared_prefix=True)
    assert float(((shared[0] - full[0]) * m).abs().max()) <= 1e-5
    assert float((shared[2] - full[2]).abs().max()) <= 1e-5 * float(full[2].abs().max())  # the adapter's gradients
    with torch.no_grad():  # the reference: the adapter off
        ref = [forward_logprobs(AdapterDisabled(model), batch, temperature=0.7, autocast=False, shared_prefix=s)[0]
               for s in (False, True)]
    assert float(((ref[1] - ref[0]) * m).abs().max()) <= 1e-5 and float(((ref[0] - full[0]) * m).abs().max()) > 1e-3
    config = str(small_config(tmp_path, tiny_model))
    for sets, why in ((["train.packing=true"], "train.packing has no prompt columns to share"),
                      (["model.gradient_checkpointing=true"], "gradient checkpointing drops that cache")):
        with pytest.raises(ValueError, match=why):
            resolve_train_config(config, ["train.shared_prefix=true", *sets])


def test_shared_prefix_auto_is_resolved_by_the_trainer(tiny_model, tmp_path):
    """``auto`` (the demo's): on in one process with the padded path, off with packing (not an
    error); the update then gets a plain bool."""
    from grpo_kit.train.config import resolve_train_config
    from grpo_kit.train.trainer import Trainer
    from tests.test_train import small_config

    got = {}
    for name, sets in {"padded": [], "packed": ["train.packing=true"]}.items():
        cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)), ["train.shared_prefix=auto", *sets])
        assert cfg.train.shared_prefix == "auto"
        tr = Trainer(cfg, tmp_path / name)
        got[name] = tr.cfg.train.shared_prefix
        tr.close()
    assert got == {"padded": True, "packed": False}


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
    at most 24 tokens, fused, and with shared prompts: the same weights and metrics within 1e-5."""
    from grpo_kit.train.trainer import Trainer
    from tests.test_train import small_config
    from grpo_kit.train.config import resolve_train_config

    weights, rows = {}, {}
    for name, sets in {"padded": [], "packed": ["train.packing=true", "train.micro_batch_tokens=24"],
                       "fused": ["train.logprobs=fused"], "shared_prefix": ["train.shared_prefix=true"]}.items():
        cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)), [
            "train.steps=1", "algorithm.epochs=2", "train.minibatch_size=16", "train.micro_batch_size=8",
            "optim.lr=1e-4", *sets])
        tr = Trainer(cfg, tmp_path / name)
        try:
            rows[name] = tr.train_step()
        finally:
            tr.close()
        weights[name] = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    for other in ("packed", "fused", "shared_prefix"):
        diff = max(float((weights["padded"][k] - weights[other][k]).abs().max()) for k in weights["padded"])
        assert diff <= 1e-5, (other, diff)  # AdamW's 4 steps of lr 1e-4 moved the weights by far more (checked below)
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    assert max(float((weights["padded"][k] - base[k]).abs().max()) for k in base) > 1e-4
    for k, v in rows["padded"].items():
        if isinstance(v, float) and not k.startswith(("time/", "tokens_per_s")):
            for other in ("packed", "fused", "shared_prefix"):
                assert v == pytest.approx(rows[other][k], rel=1e-4, abs=1e-6), (other, k)


_FAULTS = """
import resource, sys, torch
from transformers import AutoModelForCausalLM
from grpo_kit.train.models import keep_freed_memory
torch.set_num_threads(1)
print(keep_freed_memory({"on": True, "off": False, "auto": None}[sys.argv[2]], "cpu"))
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
ids = torch.randint(0, 14, (256, 7))  # the demo's update batch
faults = []
for _ in range(12):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(input_ids=ids).logits.logsumexp(-1).sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(sum(faults[4:]))
"""


def test_keep_freed_memory_stops_the_page_faults_of_each_update(tiny_model):
    """``train.keep_freed_memory`` (glibc's mallopt, process-wide: each setting in a fresh process):
    the demo's forward + backward, 8 times after 4 to settle, page-faults thousands of times with
    glibc's defaults (its freed blocks handed back to the OS) and barely at all with it on, which is
    the CPU default (off on a GPU)."""
    import subprocess
    import sys

    from grpo_kit.train.models import keep_freed_memory

    assert not keep_freed_memory(None, "cuda") and not keep_freed_memory(False, "cpu")  # nothing set
    got = {}
    for how in ("off", "auto"):
        out = subprocess.run([sys.executable, "-c", _FAULTS, str(tiny_model), how], capture_output=True,
                             text=True, timeout=300, check=True).stdout.split()
        got[how] = (out[0], int(out[1]))
    assert got["off"][0] == "False" and got["auto"][0] == "True"
    assert got["off"][1] > 1000, got  # measured 6,000-10,000
    assert got["auto"][1] * 5 < got["off"][1], got  # measured 0-500
