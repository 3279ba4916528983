"""The vllm sampler's memory settings without an engine: which of vLLM's arguments each platform
gets, the KV cache estimate, and the advice an engine that did not fit gives. The engine itself,
on machines whose NUMA node 0 reports 8 or 24 GiB, is in tests/test_vllm_sampler.py."""

import pytest
import yaml

from grpo_kit.config import ConfigError, Strict, build_config
from grpo_kit.rollout.vllm import (CPU_KV_CACHE_CAP, GPU_MEMORY_UTILIZATION, KVCacheEstimate, VLLMConfig,
                                   engine_memory_args, kv_memory_advice)

MiB, GiB = 1 << 20, 1 << 30
DEMO = KVCacheEstimate(per_token=512, max_model_len=128, max_num_seqs=256)  # the demo model, float32
SHARE_ERROR = ValueError("Available memory on node 0 (7.14/7.84 GiB) on kv cache allocation is less than "
                         "requested memory for kv (-0.46/0.39 GiB). Reduce CPU memory used by other processes.")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)


@pytest.mark.parametrize("settings, on_cpu, share, size", [
    ({}, True, GPU_MEMORY_UTILIZATION, 32 * MiB),  # CPU default: a size, room for every sequence
    ({}, False, GPU_MEMORY_UTILIZATION, None),  # GPU default: the share
    ({"kv_cache_memory_bytes": "64MiB"}, True, GPU_MEMORY_UTILIZATION, 64 * MiB),  # the user's size
    ({"kv_cache_memory_bytes": "2GiB"}, False, GPU_MEMORY_UTILIZATION, 2 * GiB),  # a size on a GPU too
    ({"gpu_memory_utilization": 0.05}, True, 0.05, None),  # a share asked for on a CPU is kept
    ({"gpu_memory_utilization": 0.5}, False, 0.5, None),
    ({"gpu_memory_utilization": 0.5, "kv_cache_memory_bytes": 1024}, True, 0.5, 1024),  # the size wins
])
def test_memory_arguments(settings, on_cpu, share, size):
    assert engine_memory_args(VLLMConfig(**settings), DEMO, on_cpu=on_cpu) == {
        "gpu_memory_utilization": share, "kv_cache_memory_bytes": size}


def test_vllm_cpu_kvcache_space_replaces_the_default_and_must_agree_with_a_size(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # vllm-cpu overwrites kv_cache_memory_bytes with it
    assert engine_memory_args(VLLMConfig(), DEMO, on_cpu=True)["kv_cache_memory_bytes"] is None
    assert engine_memory_args(VLLMConfig(kv_cache_memory_bytes="2GiB"), DEMO, on_cpu=True)[
        "kv_cache_memory_bytes"] == 2 * GiB
    with pytest.raises(ConfigError, match="VLLM_CPU_KVCACHE_SPACE .*disagree: unset one"):
        engine_memory_args(VLLMConfig(kv_cache_memory_bytes="64MiB"), DEMO, on_cpu=True)
    assert engine_memory_args(VLLMConfig(), DEMO, on_cpu=False)["kv_cache_memory_bytes"] is None  # GPU: unread


@pytest.mark.parametrize("value, parsed", [
    (1048576, MiB), ("512MiB", 512 * MiB), ("1.5GiB", 3 * GiB // 2), ("64MB", 64_000_000), (None, None)])
def test_kv_cache_memory_bytes_takes_bytes_or_a_size(value, parsed):
    assert VLLMConfig(kv_cache_memory_bytes=value).kv_cache_memory_bytes == parsed


@pytest.mark.parametrize("value", [0, -1, "lots"])
def test_a_bad_size_is_refused_at_load(value):
    with pytest.raises(ConfigError, match="vllm.kv_cache_memory_bytes"):
        build_config({"vllm": {"kv_cache_memory_bytes": value}}, _Holder, "test")


def test_a_size_survives_the_run_folder_dump():
    """The trainer writes the resolved config as YAML (``mode="json"``); eval reads it back."""
    cfg = VLLMConfig(kv_cache_memory_bytes="32MiB")
    again = VLLMConfig(**yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))))
    assert again == cfg and again.gpu_memory_utilization is None


def test_the_estimate_reads_the_model_config_and_the_checkpoint_dtype(tmp_path):
    from transformers import Qwen2Config

    # Qwen2.5-0.5B's shape: 24 layers, 2 KV heads of 64, bf16 checkpoint, 32k positions
    hf = Qwen2Config(hidden_size=896, num_attention_heads=14, num_key_value_heads=2, num_hidden_layers=24,
                     max_position_embeddings=32768)
    (tmp_path / "config.json").write_text('{"dtype": "bfloat16"}')
    est = KVCacheEstimate.of(hf, VLLMConfig(max_model_len=1536), tmp_path)
    assert est.per_token == 2 * 24 * 2 * 64 * 2 == 12288  # 12 KiB a token
    assert est.one_sequence == 12288 * 1536 and est.max_num_seqs == 256
    assert est.cpu_default() == CPU_KV_CACHE_CAP  # 256 x 18 MiB is over the cap
    f32 = KVCacheEstimate.of(hf, VLLMConfig(dtype="float32"), tmp_path)  # the engine's dtype wins
    assert f32.per_token == 2 * est.per_token and f32.max_model_len == 32768
    # Qwen2.5-7B's shape: one 32k sequence needs 1.75 GiB, over the cap, and is what the default takes
    big = Qwen2Config(hidden_size=3584, num_attention_heads=28, num_key_value_heads=4, num_hidden_layers=28,
                      max_position_embeddings=32768)
    est7 = KVCacheEstimate.of(big, VLLMConfig(), tmp_path)
    assert est7.cpu_default() == est7.one_sequence == 2 * 28 * 4 * 128 * 2 * 32768 == 1792 * MiB


def test_the_advice_keeps_vllms_reason_and_names_the_setting():
    msg = kv_memory_advice(SHARE_ERROR, {"gpu_memory_utilization": 0.05, "kv_cache_memory_bytes": None}, DEMO)
    assert str(SHARE_ERROR) in msg and "vllm.gpu_memory_utilization = 0.05" in msg
    assert "Set vllm.kv_cache_memory_bytes" in msg and "e.g. vllm.kv_cache_memory_bytes=32MiB" in msg
    sized = kv_memory_advice(SHARE_ERROR, {"gpu_memory_utilization": 0.3, "kv_cache_memory_bytes": 40 * GiB}, DEMO)
    assert "with vllm.kv_cache_memory_bytes = 40960MiB" in sized
    unknown = KVCacheEstimate(per_token=None, max_model_len=None, max_num_seqs=256)
    assert "Set vllm.kv_cache_memory_bytes" in kv_memory_advice(SHARE_ERROR, {
        "gpu_memory_utilization": 0.3, "kv_cache_memory_bytes": None}, unknown)


class _Holder(Strict):  # the vllm: block of a config
    vllm: VLLMConfig
