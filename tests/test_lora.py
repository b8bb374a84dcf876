"""LoRA through PEFT (`use_peft` and TRL's lora_* names): only the adapter trains, the reference policy
is the base model with the adapter disabled, the output is the adapter, `sgpo merge` writes the merged
model, and `sgpo eval` / `sgpo selectivity` load the adapter folder as they load the merged one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sgpo.cli import main as sgpo_main
from sgpo.config import SGPOConfig
from sgpo.modeling import load_tokenizer
from sgpo.testing import build_tiny_model, build_tiny_tokenizer, tiny_arithmetic_rows, write_tiny_assets

from conftest import FixedRolloutTrainer, even_answer_reward, param_snapshot

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "v_proj", "up_proj"]


def lora_args(out: Path, **kw) -> SGPOConfig:
    base = dict(
        output_dir=str(out),
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lora_target_modules=TARGETS,
        per_device_train_batch_size=4,
        num_generations=3,
        num_guided_generations=2,
        max_completion_length=10,
        distill_on="all",
        instance_weighting="constant",
        beta=0.04,
        learning_rate=0.05,
        max_steps=3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    base.update(kw)
    return SGPOConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A base model saved to disk, and a LoRA run of 3 steps on it (the adapter saved)."""
    root = tmp_path_factory.mktemp("lora")
    tokenizer = build_tiny_tokenizer()
    build_tiny_model(tokenizer).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    trainer = FixedRolloutTrainer(
        str(root / "base"),
        args=lora_args(root / "run"),
        processing_class=load_tokenizer(str(root / "base")),
        reward_funcs=[even_answer_reward],
        train_dataset=tiny_arithmetic_rows(8),
    )
    base = param_snapshot(trainer.model.get_base_model())
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    trainer.save_model()
    return root, trainer, base, lora_before


def test_only_the_adapter_trains_and_the_base_weights_stay_bit_identical(trained):
    root, trainer, base, lora_before = trained
    model = trainer.model
    assert trainer.ref_model is None  # the reference is the base model with the adapter disabled, not a copy
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable if n.endswith("lora_A.default.weight")} == set(TARGETS)
    on_disk = load_file(root / "base" / "model.safetensors")  # the base model the run loaded
    checked = 0
    for name, p in model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        assert torch.equal(p, on_disk[name.replace(".base_layer", "")]), name  # bit-identical after 3 steps
        assert torch.equal(p, base[name]), name
        checked += 1
    assert checked == len(on_disk)
    moved = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p, lora_before[n])]
    assert any("lora_B" in n for n in moved) and any("lora_A" in n for n in moved)


def test_the_reference_is_the_base_model_with_the_adapter_disabled(trained):
    root, trainer, *_ = trained
    logs = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    kl = [m["kl"] for m in logs if "kl" in m]
    # step 1: the adapter starts at zero (lora_B = 0), so policy = base and KL(π_θ ‖ π_ref) = 0; then it grows
    assert len(kl) == 3 and kl[0] == pytest.approx(0.0, abs=1e-7) and kl[1] > 0 and kl[2] > 0


def test_the_output_is_the_adapter_and_merge_gives_the_adapted_model(trained, tmp_path):
    root, trainer, *_ = trained
    out = root / "run"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists() and (out / "prompt_format.json").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["base_model_name_or_path"] == str((root / "base").resolve())
    assert sgpo_main(["merge", str(out), "--out", str(tmp_path / "merged")]) == 0
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = torch.tensor([[5, 9, 12, 40, 7, 3]])
    with torch.no_grad():
        expected = trainer.model(input_ids=ids).logits
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
    assert (tmp_path / "merged" / "prompt_format.json").is_file() and (tmp_path / "merged" / "tokenizer.json").is_file()
    assert sgpo_main(["merge", str(root / "base"), "--out", str(tmp_path / "x")]) == 1  # not an adapter folder


def test_eval_and_selectivity_load_an_adapter_folder(trained, tmp_path):
    root, *_ = trained
    assert sgpo_main(["merge", str(root / "run"), "--out", str(tmp_path / "merged")]) == 0
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_arithmetic_rows(4)))
    results = {}
    for name, model in (("adapter", root / "run"), ("merged", tmp_path / "merged")):
        assert (
            sgpo_main(
                [
                    "eval",
                    "--model",
                    str(model),
                    "--benchmark",
                    str(data),
                    "--k",
                    "2",
                    "--temperature",
                    "1.0",
                    "--max-new-tokens",
                    "6",
                    "--backend",
                    "hf",
                    "--out",
                    str(tmp_path / f"eval-{name}"),
                ]
            )
            == 0
        )
        samples = tmp_path / f"eval-{name}"
        results[name] = [p.read_text() for p in sorted((samples / "samples").glob("*.jsonl"))]
        assert (
            sgpo_main(
                [
                    "selectivity",
                    "--model",
                    str(model),
                    "--input",
                    str(data),
                    "--limit",
                    "2",
                    "--max-new-tokens",
                    "6",
                    "--out",
                    str(tmp_path / f"sel-{name}"),
                ]
            )
            == 0
        )
    assert results["adapter"] and results["adapter"] == results["merged"]  # the same completions, token for token
    summaries = [json.loads((tmp_path / f"sel-{n}" / "summary.json").read_text()) for n in ("adapter", "merged")]
    for key in ("tokens", "kl_total", "kl_mean_per_token"):
        assert summaries[0][key] == pytest.approx(summaries[1][key], rel=1e-5), key


def test_lm_head_as_a_lora_target_and_lora_with_vllm_are_clear_errors(tmp_path, tokenizer, rows):
    from sgpo.adapters import AdapterError

    with pytest.raises(AdapterError, match="includes the LM head"):
        FixedRolloutTrainer(
            build_tiny_model(tokenizer),
            args=lora_args(tmp_path, lora_target_modules=["q_proj", "lm_head"]),
            processing_class=tokenizer,
            reward_funcs=[even_answer_reward],
            train_dataset=rows,
        )
    with pytest.raises(ValueError, match="SGPOConfig.use_peft: with use_vllm is not supported yet"):
        lora_args(tmp_path, use_vllm=True)


@pytest.mark.slow
def test_sgpo_train_use_peft_from_the_command_line(tmp_path):
    assets = write_tiny_assets(tmp_path / "tiny", n=8, warm_up=False)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgpo",
            "train",
            "--config",
            str(ROOT / "recipes" / "tiny_cpu.yaml"),
            "--model_name_or_path",
            str(assets / "model"),
            "--dataset_name",
            str(assets / "train.jsonl"),
            "--output_dir",
            str(out),
            "--report_to",
            "none",
            "--max_steps",
            "2",
            "--use_peft",
            "true",
            "--lora_r",
            "8",
            "--lora_target_modules",
            "all-linear",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and {t.split(".")[-1] for t in config["target_modules"]} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
