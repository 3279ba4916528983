"""LoRA through peft on the tiny demo model: the config, the trainable parameters (counted and
printed), the frozen base bit-identical after training, the reference as the base with the adapter
off (no copy), checkpoints (resume, export merged or as the adapter) and eval of a LoRA run.

The demo learning with LoRA and a SIGKILLed LoRA run resuming are in tests/test_demo_learns.py and
tests/test_train.py; the vLLM sync in tests/test_vllm_sampler.py; torchrun in
tests/test_distributed.py."""

from __future__ import annotations

import pytest
import torch
import yaml

from grpo_kit.config import ConfigError
from grpo_kit.demo import demo_config
from grpo_kit.train.config import resolve_train_config

LORA = {"r": 8, "alpha": 16}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from grpo_kit.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"), seed=0, warm_start_steps=30)


def _cfg(model, *, steps=3, lora=LORA, beta=0.04, **train):
    data = demo_config()
    data["model"] = {"path": str(model), **({"lora": lora} if lora is not None else {})}
    data["algorithm"]["kl"]["beta"] = beta
    data["optim"]["lr"] = 3e-3
    data["train"].update(steps=steps, prompts_per_step=8, save_every=0, samples_every=0, torch_threads=1, **train)
    data["sampling"]["n"] = 4
    data["run"]["progress"] = False
    from grpo_kit.train.config import TrainConfig
    from grpo_kit.config import build_config

    return build_config(data, TrainConfig, "test")


def _base_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def _adapter_count(model, r: int) -> int:
    """r * (in + out) for every linear layer but the output head (peft's all-linear)."""
    return sum(r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))


@pytest.mark.parametrize("lora, message", [
    ({"target_modules": []}, "name at least one module"),
    ({"r": 0}, "model.lora.r: Input should be greater than or equal to 1"),
    ({"rank": 4}, "model.lora.rank: unknown key"),
    ({"dropout": 1.0}, "model.lora.dropout: Input should be less than 1"),
])
def test_config_errors_name_the_key(lora, message):
    sets = [f"model.lora={yaml.safe_dump(lora, default_flow_style=True).strip()}"]
    with pytest.raises(ConfigError, match=message):
        resolve_train_config(None, sets)


def test_merged_weights_equal_peft_merge_and_unload(tiny_model):
    """What the vLLM sampler receives (grpo_kit.lora.hf_weights) against peft's own merge, with a
    trained adapter and a module trained whole (modules_to_save): the same names, the same tensors."""
    import copy

    from grpo_kit.lora import apply_lora, hf_weights

    model = apply_lora(_base_model(tiny_model), r=4, alpha=8, dropout=0.0, target_modules="all-linear",
                       modules_to_save=["norm"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:  # lora_A, lora_B and the trained copy of the final norm
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    mine = dict(hf_weights(model))
    theirs = copy.deepcopy(model).merge_and_unload().state_dict()
    assert sorted(mine) == sorted(theirs) == sorted(_base_model(tiny_model).state_dict())
    for k in theirs:
        assert torch.allclose(mine[k], theirs[k], atol=1e-6), k
    assert not torch.equal(mine["model.norm.weight"], _base_model(tiny_model).state_dict()["model.norm.weight"])


def test_unknown_target_module_lists_the_linear_layers(tiny_model):
    from grpo_kit.train.models import load_policy

    cfg = _cfg(tiny_model, lora={"target_modules": ["qproj"]})
    with pytest.raises(ConfigError, match=r"model.lora.target_modules \['qproj'\].*named down_proj, gate_proj, "
                       r"k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"):
        load_policy(cfg.model)
    tied = _cfg(tiny_model, lora={"modules_to_save": ["lm_head"]})  # the demo model ties it to the embedding
    with pytest.raises(ConfigError, match="ties lm_head to embed_tokens"):
        load_policy(tied.model)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """3 LoRA steps with the KL on (the adapter moves, the reference must not)."""
    from grpo_kit.train.trainer import Trainer

    run = tmp_path_factory.mktemp("lora-run")
    tr = Trainer(_cfg(tiny_model), run)
    tr.train()
    return tr, run


def test_only_the_adapter_trains_and_the_count_is_printed(tiny_model, tmp_path, capsys):
    from grpo_kit.train.trainer import Trainer

    tr = Trainer(_cfg(tiny_model, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}), tmp_path)
    tr.close()
    base = _base_model(tiny_model)
    want = sum(4 * (m.in_features + m.out_features) for n, m in base.named_modules()
               if n.endswith(("q_proj", "v_proj")))
    total = sum(p.numel() for p in base.parameters()) + want
    assert f"trainable parameters: {want:,} of {total:,}" in capsys.readouterr().err
    names = [n for n, p in tr.model.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert {id(p) for g in tr.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in tr.model.parameters() if p.requires_grad}
    full = Trainer(_cfg(tiny_model, lora=None), tmp_path / "full")  # the same line without LoRA: every weight
    full.close()
    n = sum(p.numel() for p in base.parameters())
    assert f"trainable parameters: {n:,} of {n:,} (100.00%)" in capsys.readouterr().err


def test_frozen_base_is_bit_identical_after_training_and_the_adapter_moved(trained, tiny_model):
    tr, _ = trained
    base = dict(_base_model(tiny_model).named_parameters())
    seen = 0
    for name, p in tr.model.named_parameters():
        if p.requires_grad:
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(p.detach(), base[key].detach()), key
        seen += 1
    assert seen == len(base)  # every weight of the base, tied embedding included
    moved = [float(p.detach().abs().max()) for n, p in tr.model.named_parameters() if ".lora_B." in n]
    assert len(moved) == 14 and min(moved) > 0  # B starts at 0: every adapted layer has learnt
    assert sum(p.numel() for p in tr.model.parameters() if p.requires_grad) == _adapter_count(
        _base_model(tiny_model), LORA["r"])


def test_reference_is_the_base_with_the_adapter_off(trained, tiny_model):
    from grpo_kit.lora import AdapterDisabled

    tr, _ = trained
    assert isinstance(tr.ref_model, AdapterDisabled) and tr.ref_model.model is tr.model  # no copy
    ids = torch.tensor([[3, 4, 12, 5, 13], [11, 10, 12, 2, 13]])
    with torch.no_grad():
        ref = tr.ref_model(input_ids=ids).logits
        base = _base_model(tiny_model)(input_ids=ids).logits
        policy = tr.model(input_ids=ids).logits
    assert torch.equal(ref, base)
    assert float((policy - base).abs().max()) > 1e-3  # the adapter is on again after the reference pass
    assert any(p.requires_grad for p in tr.model.parameters())  # and trainable


def test_adapter_off_reference_trains_exactly_as_a_separate_base_copy(trained, tiny_model, tmp_path):
    """The same 3 steps with a separately loaded base model as the reference give the same
    metrics: the KL is to the base, not to the policy (which would give a KL of exactly 0)."""
    from grpo_kit.train.logger import read_metrics
    from grpo_kit.train.trainer import Trainer

    _, run = trained
    tr = Trainer(_cfg(tiny_model), tmp_path)
    tr.ref_model = _base_model(tiny_model).requires_grad_(False)  # what the flag saves: a second model
    tr.train()
    a, b = read_metrics(run / "metrics.jsonl"), read_metrics(tmp_path / "metrics.jsonl")
    strip = lambda r: {k: v for k, v in r.items() if not k.startswith(("time/", "tokens_per_s"))}  # noqa: E731
    assert [strip(r) for r in a] == [strip(r) for r in b]
    kls = [r["kl"] for r in a if "kl" in r]
    assert kls[0] == 0.0 and kls[-1] > 1e-6, kls  # B = 0 at the start; then the adapter moves away


def test_checkpoint_is_a_peft_adapter_and_exports_merged_or_alone(trained, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from grpo_kit.cli import main

    tr, run = trained
    ckpt = run / "checkpoints" / "step-000003"
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    ids = torch.tensor([[3, 4, 12, 5, 13]])
    with torch.no_grad():
        want = tr.model(input_ids=ids).logits
    assert main(["export", str(run), "-o", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in k for k in merged.state_dict())
    assert main(["export", str(run), "--adapter", "-o", str(tmp_path / "adapter")]) == 0
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    adapted = PeftModel.from_pretrained(_base_model(tiny_model), tmp_path / "adapter").eval()
    with torch.no_grad():
        for m in (merged, adapted):
            assert torch.allclose(m(input_ids=ids).logits, want, atol=1e-5)


def test_export_flags_refuse_a_full_checkpoint(tiny_model, tmp_path):
    from grpo_kit.cli import main
    from grpo_kit.train.trainer import Trainer

    Trainer(_cfg(tiny_model, lora=None, steps=1), tmp_path / "full").train()
    assert main(["export", str(tmp_path / "full"), "--adapter", "-o", str(tmp_path / "x")]) == 2


def test_resume_loads_the_adapter_and_refuses_a_mismatch(trained, tiny_model, tmp_path):
    import shutil

    from grpo_kit.train.trainer import Trainer

    tr, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    again = Trainer(_cfg(tiny_model, steps=4), copy, resume=True)
    try:
        assert again.step == 3
        for (n, a), (_, b) in zip(tr.model.named_parameters(), again.model.named_parameters()):
            assert torch.equal(a, b), n
    finally:
        again.close()
    with pytest.raises(ConfigError, match="holds a LoRA adapter"):
        Trainer(_cfg(tiny_model, lora=None, steps=4), copy, resume=True)
    with pytest.raises(ConfigError, match="does not match model.lora"):
        Trainer(_cfg(tiny_model, lora={"r": 4}, steps=4), copy, resume=True)


def test_eval_of_a_lora_run(trained, capsys):
    import json

    from grpo_kit.cli import main

    _, run = trained
    assert main(["eval", str(run), "--limit", "4", "--k", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"].endswith("step-000003") and summary["prompts"] == 4


def test_a_bf16_base_keeps_the_trainable_weights_float32(tiny_model):
    """What a GPU gets with dtype auto (a bf16 frozen base), asked for explicitly on the CPU: the
    adapter and modules_to_save stay float32, and a bf16-autocast step gives them float32 gradients."""
    from grpo_kit.train.config import ModelConfig
    from grpo_kit.train.models import load_policy

    model, *_ = load_policy(ModelConfig(path=str(tiny_model), dtype="bfloat16",
                                        lora={"r": 4, "modules_to_save": ["norm"]}))
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and set(trainable.values()) == {torch.float32}
    assert any("modules_to_save" in n for n in trainable)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=torch.tensor([[3, 4, 12, 5, 13]])).logits.float().logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
