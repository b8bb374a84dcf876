"""`sgpo train --config RECIPE --dry-run` on every shipped recipe, through the real CLI: nothing is loaded
but configs. The hub models cannot be fetched here, so each runs against a local stand-in folder with
the real model's config (sizes from its published config.json) and the tiny tokenizer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from sgpo.cli import main
from sgpo.testing import build_tiny_tokenizer, tiny_arithmetic_rows

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))

# the published sizes of the recipes' models (config.json on the hub), and their parameter counts
STAND_INS = {
    "Qwen/Qwen2.5-Math-1.5B": (
        "qwen2",
        dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            vocab_size=151936,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        ),
        1.54e9,
    ),
    "Qwen/Qwen2.5-7B-Instruct": (
        "qwen2",
        dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            vocab_size=152064,
            max_position_embeddings=32768,
            tie_word_embeddings=False,
        ),
        7.62e9,
    ),
    "meta-llama/Llama-3.1-8B-Instruct": (
        "llama",
        dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            max_position_embeddings=131072,
            tie_word_embeddings=False,
        ),
        8.03e9,
    ),
}


def recipe_value(recipe: str, key: str) -> str:
    import yaml

    return yaml.safe_load((ROOT / "recipes" / recipe).read_text())[key]


def stand_in(folder: Path, hub_id: str) -> Path:
    """A folder with the hub model's config (dtype bfloat16) and the tiny tokenizer: no weights."""
    from transformers import AutoConfig

    model_type, sizes, _ = STAND_INS[hub_id]
    AutoConfig.for_model(model_type, dtype="bfloat16", **sizes).save_pretrained(folder)
    build_tiny_tokenizer().save_pretrained(folder)
    return folder


def dry(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(["train", *args, "--dry-run"])
    captured = capsys.readouterr()
    assert not captured.err.startswith("sgpo train: error"), captured.err
    prefix = "sgpo train --dry-run: "  # (other lines: libraries' own warnings, e.g. DeepSpeed's on import)
    return code, [line.removeprefix(prefix) for line in captured.out.splitlines() if line.startswith(prefix)]


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tiny_arithmetic_rows(128)))
    return path


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_shipped_recipe_dry_runs(recipe, tmp_path, data, capsys):
    model = recipe_value(recipe, "model_name_or_path")
    args = ["--config", str(ROOT / "recipes" / recipe), "--dataset_name", str(data), "--output_dir", str(tmp_path / "out")]
    if model in STAND_INS:
        args += [
            "--model_name_or_path",
            str(stand_in(tmp_path / "model", model)),
            "--num_processes",
            "1" if "1gpu" in recipe else "8",
        ]
    else:  # the tiny CPU recipe: its own tiny model
        from sgpo.testing import write_tiny_assets

        args += ["--model_name_or_path", str(write_tiny_assets(tmp_path / "tiny", n=8, warm_up=False) / "model")]
    code, lines = dry(capsys, *args)
    text = "\n".join(lines)
    assert code == 0, text
    assert lines[-1] == "dry run: ok (no weights were loaded)"
    assert "data: " in text and "128 problems, 128 with a strategy" in text and "row 'add-0'" in text
    assert "prompt lengths (autonomous, 128): max" in text and "prompt lengths (guided, 128)" in text
    assert "effective batch:" in text and "memory (rough" in text
    assert not list((tmp_path / "out").glob("*"))  # nothing written
    if model in STAND_INS:
        params = float(next(line for line in lines if line.startswith("memory")).split("parameters")[0].split(",")[-1].split()[0])
        assert params == pytest.approx(STAND_INS[model][2] / 1e9, rel=0.01)  # the published parameter count


def test_the_8_gpu_figures(tmp_path, data, capsys):
    # 2 problems × 4 accumulation steps per GPU, 8 GPUs, 8 + 8 completions each; ZeRO-3 shards
    # weights, gradients and AdamW states (+ fp32 master weights) of 7.62 B parameters over 8 processes
    recipe = ROOT / "recipes" / "qwen2.5-7b-instruct_8gpu_zero3.yaml"
    model = stand_in(tmp_path / "model", "Qwen/Qwen2.5-7B-Instruct")
    code, lines = dry(
        capsys,
        "--config",
        str(recipe),
        "--dataset_name",
        str(data),
        "--model_name_or_path",
        str(model),
        "--num_processes",
        "8",
        "--engine",
        "zero3",
    )
    assert code == 0
    text = "\n".join(lines)
    assert (
        "effective batch: 8 problems per optimizer step per process (64 over 8 processes), each with 8 autonomous "
        "+ 8 guided completions (at most 128 completions per process, 1024 in all)"
    ) in text
    zero3 = next(line for line in lines if line.strip().startswith("zero3"))
    params = 7.6156e9  # Qwen2.5-7B
    expected = (params * 2 / 8 + params * 2 / 8 + params * 12 / 8) / 1024**3
    assert float(zero3.split("=")[1].split()[0]) == pytest.approx(expected, rel=0.01)
    assert not any(line.strip().startswith("ddp") for line in lines)  # one engine asked for
    assert "the colocated vLLM engine" in text


def test_problems_are_named_and_nothing_loads(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "p", "final": "x"}) + "\n")
    code, lines = dry(
        capsys,
        "--config",
        str(ROOT / "recipes" / "qwen2.5-math-1.5b_1gpu.yaml"),
        "--dataset_name",
        str(bad),
        "--model_name_or_path",
        "Qwen/Qwen2.5-Math-1.5B",
    )
    assert code == 1
    assert any(
        line.startswith(f"issue: data: {bad}: row 0: missing column 'answer' (columns found: final, problem)") for line in lines
    )
    assert "memory: skipped (the model config of 'Qwen/Qwen2.5-Math-1.5B' is not available locally)" in lines
    # the real run would stop at the model too (the hub is not reachable here: HF_HUB_OFFLINE)
    assert any(
        line.startswith("issue: Qwen/Qwen2.5-Math-1.5B: no such model folder, and not in the Hugging Face cache")
        for line in lines
    )
    assert lines[-1] == "dry run: 2 issue(s) (no weights were loaded)"


def test_the_dry_run_checks_what_the_real_run_checks_before_loading(tmp_path, data, capsys):
    # a model path that does not exist, an unknown reward function, an integration that is not
    # installed: the real run stops at each, so the dry run must not say ok
    from sgpo.testing import write_tiny_assets

    recipe = ["--config", str(ROOT / "recipes" / "tiny_cpu.yaml"), "--dataset_name", str(data)]
    code, lines = dry(capsys, *recipe, "--model_name_or_path", str(tmp_path / "no-model"), "--reward_funcs", "accuracy", "boxed",
                      *(["--report_to", "wandb"] if importlib.util.find_spec("wandb") is None else []))  # fmt: skip
    issues = [line for line in lines if line.startswith("issue: ")]
    assert code == 1 and issues[:2] == [
        f"issue: {tmp_path / 'no-model'}: no such model folder",
        "issue: rewards: unknown reward function 'boxed'; known: accuracy, accuracy_reward, boxed_format, "
        "boxed_format_reward; or give module:function, module.function or file.py:function",
    ]
    if importlib.util.find_spec("wandb") is None:
        assert (
            issues[2]
            == "issue: report_to wandb: the wandb package is not installed (pip install wandb), or pass --report_to none"
        )
    assert lines[-1] == f"dry run: {len(issues)} issue(s) (no weights were loaded)"
    model = str(write_tiny_assets(tmp_path / "tiny", n=4, warm_up=False) / "model")
    code, lines = dry(
        capsys,
        *recipe,
        "--model_name_or_path",
        model,
        "--reward_funcs",
        "accuracy",
        "boxed_format",
        "--reward_weights",
        "1",
        "2",
        "3",
    )
    assert (
        code == 1
        and "issue: rewards: reward_weights has 3 value(s) for 2 reward function(s) (accuracy_reward, boxed_format_reward)"
        in lines
    )
    assert lines[-1] == "dry run: 1 issue(s) (no weights were loaded)"


def test_prompts_over_max_prompt_length_are_a_problem(tmp_path, data, capsys):
    model = stand_in(tmp_path / "model", "Qwen/Qwen2.5-Math-1.5B")
    code, lines = dry(
        capsys,
        "--config",
        str(ROOT / "recipes" / "qwen2.5-math-1.5b_1gpu.yaml"),
        "--dataset_name",
        str(data),
        "--model_name_or_path",
        str(model),
        "--max_prompt_length",
        "20",
    )
    assert code == 1
    assert any(line.startswith("issue: prompts: 128 guided prompt(s) exceed max_prompt_length=20") for line in lines)
