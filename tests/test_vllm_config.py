"""The vLLM settings without an engine: SGPOConfig's vLLM fields and their validation, the mapping of
the trainer's sampling fields to vLLM's, the weights pushed to an engine. None of this needs vllm."""

import subprocess
import sys

import pytest
import torch

from sgpo.config import SGPOConfig
from sgpo.testing import build_vllm_tiny_model
from sgpo.vllm_engine import EngineSettings, SamplingSettings, hf_weights, import_vllm, sampling_kwargs_from_generation_kwargs


def config(tmp_path, **kw) -> SGPOConfig:
    base = dict(output_dir=str(tmp_path), num_guided_generations=0, distill_coef=0.0, report_to="none")
    return SGPOConfig(**{**base, **kw})


def test_trl_names_and_defaults(tmp_path):
    args = config(tmp_path)
    # TRL 1.16 GRPOConfig's defaults
    assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization, args.vllm_tensor_parallel_size) == (
        False,
        "colocate",
        0.3,
        1,
    )
    assert (args.vllm_importance_sampling_correction, args.vllm_importance_sampling_mode) == (True, "sequence_mask")
    assert (args.vllm_importance_sampling_clip_max, args.vllm_importance_sampling_clip_min) == (3.0, None)
    assert (args.vllm_server_host, args.vllm_server_port, args.vllm_server_timeout, args.vllm_group_port) == (
        "0.0.0.0",
        8000,
        240.0,
        51216,
    )
    # TRL's deprecated name still works: it sets clip_max
    assert config(tmp_path, vllm_importance_sampling_cap=2.0).vllm_importance_sampling_clip_max == 2.0


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"vllm_mode": "remote"}, "vllm_mode"),
        ({"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization"),
        ({"vllm_tensor_parallel_size": 0}, "vllm_tensor_parallel_size"),
        ({"vllm_max_model_length": 512, "max_completion_length": 512}, "vllm_max_model_length"),
        ({"vllm_kv_cache_memory_bytes": 1000}, "vllm_kv_cache_memory_bytes"),
        ({"vllm_server_port": 70000}, "vllm_server_port"),
        ({"vllm_server_timeout": 0}, "vllm_server_timeout"),
        ({"vllm_server_weight_sync": "rsync"}, "vllm_server_weight_sync"),
        ({"vllm_importance_sampling_mode": "token_clip"}, "vllm_importance_sampling_mode"),
        ({"vllm_importance_sampling_clip_max": 0.0}, "vllm_importance_sampling_clip_max"),
        (
            {"vllm_importance_sampling_clip_min": 2.0, "vllm_importance_sampling_clip_max": 1.5},
            "vllm_importance_sampling_clip_min",
        ),
        (
            {"vllm_importance_sampling_mode": "token_truncate", "vllm_importance_sampling_clip_max": None},
            "vllm_importance_sampling_clip_max",
        ),
        ({"use_vllm": True, "generation_kwargs": {"num_beams": 4}}, "generation_kwargs"),
    ],
)
def test_bad_settings_name_their_field(tmp_path, kw, field):
    with pytest.raises(ValueError, match=rf"SGPOConfig\.{field}:"):
        config(tmp_path, **kw)


def test_generation_kwargs_map_to_vllm_or_are_refused():
    out = sampling_kwargs_from_generation_kwargs(
        {"min_new_tokens": 4, "max_new_tokens": 9, "top_k": None, "min_p": None, "eos_token_id": 7, "pad_token_id": 0}
    )
    assert out == {"min_tokens": 4, "max_tokens": 9, "top_k": 0, "min_p": 0.0, "stop_token_ids": [7]}
    assert sampling_kwargs_from_generation_kwargs({"do_sample": False}) == {"temperature": 0.0}
    assert sampling_kwargs_from_generation_kwargs({"do_sample": True}) == {}
    with pytest.raises(ValueError, match=r"'num_beams', 'suppress_tokens' has no vLLM equivalent"):
        sampling_kwargs_from_generation_kwargs({"suppress_tokens": [3], "num_beams": 2})
    # without use_vllm the HF path takes any GenerationConfig field
    SGPOConfig(output_dir="x", num_guided_generations=0, distill_coef=0.0, report_to="none", generation_kwargs={"num_beams": 2})


def test_sampling_settings_are_the_trainers(tmp_path):
    args = config(
        tmp_path,
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        min_p=0.05,
        repetition_penalty=1.1,
        max_completion_length=64,
        generation_kwargs={"min_new_tokens": 2, "top_p": 0.8},
    )
    s = SamplingSettings.from_config(args, eos=[1, 5])
    assert s == SamplingSettings(
        max_tokens=64,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        min_p=0.05,
        repetition_penalty=1.1,
        min_tokens=2,
        stop_token_ids=(1, 5),
    )
    # the trainer's defaults: top_k 0 and min_p None mean off
    d = SamplingSettings.from_config(config(tmp_path), eos=[1])
    assert (d.top_k, d.min_p, d.top_p, d.temperature) == (0, 0.0, 1.0, 1.0)
    body = s.request_body()
    assert body["stop_token_ids"] == [1, 5] and body["max_tokens"] == 64 and "seed" not in body


def test_engine_settings_on_a_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU defaults")
    kw = EngineSettings.from_config(config(tmp_path, seed=3)).llm_kwargs()
    # a fixed KV cache (a memory fraction fails on a busy machine), eager, the run's seed
    assert kw["kv_cache_memory_bytes"] == 256 * 2**20 and "gpu_memory_utilization" not in kw
    assert kw["enforce_eager"] is True and kw["seed"] == 3
    kw = EngineSettings.from_config(config(tmp_path, vllm_kv_cache_memory_bytes=2**26, vllm_enforce_eager=False)).llm_kwargs()
    assert kw["kv_cache_memory_bytes"] == 2**26 and kw["enforce_eager"] is False


@pytest.mark.parametrize("tied", [False, True])
def test_pushed_weights_include_the_output_embedding(tokenizer, tied):
    model = build_vllm_tiny_model(tokenizer, tie_word_embeddings=tied)
    names = dict(hf_weights(model))
    assert set(names) == set(model.state_dict())
    assert "lm_head.weight" in names
    if tied:  # named_parameters() lists a tied weight once, under the input embedding's name
        assert "lm_head.weight" not in dict(model.named_parameters())

    # a model whose state_dict leaves the head out still pushes it
    def drop_head(module, sd, prefix, local):
        sd.pop("lm_head.weight", None)

    model._register_state_dict_hook(drop_head)
    assert "lm_head.weight" not in model.state_dict()
    with torch.no_grad():  # weights the engine has not seen: the push must carry these values
        model.lm_head.weight.add_(0.5)
    weights = dict(hf_weights(model))
    # checked by value (a missing head fails on the comparison, not on a KeyError); tied: the embedding's values
    pushed = weights.get("lm_head.weight", torch.zeros(0))
    assert torch.equal(pushed, model.lm_head.weight)
    if tied:
        assert torch.equal(pushed, model.model.embed_tokens.weight)


def test_importing_the_module_does_not_import_vllm(monkeypatch):
    code = "import sys, sgpo.vllm_engine, sgpo.config; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match=r"make vllm"):
        import_vllm()
