"""`sgpo train` through the real CLI (a subprocess), with the tiny recipe shipped in recipes/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgpo.testing import write_tiny_assets

ROOT = Path(__file__).resolve().parents[1]


def python(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def sgpo(*args, cwd=None):
    return python("-m", "sgpo", *args, cwd=cwd)


@pytest.mark.slow
def test_readme_tiny_run_moves_every_part_of_the_method(tmp_path):
    # the README's Train block, in a fresh folder: the recipe's own relative paths (runs/tiny/...)
    proc = python("-m", "sgpo.testing", "runs/tiny", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = sgpo("train", "--config", str(ROOT / "recipes" / "tiny_cpu.yaml"), "--report_to", "none", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "sgpo" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in logs if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    first = steps[0]
    # a random model scores 0 everywhere (loss, rewards, weight 0, no KL, everything truncated);
    # the warmed-up one shows every part of the method from the first step
    assert first["reward/auto"] > 0 and first["reward/guided"] > first["reward/auto"]
    assert first["distill/weight_mean"] > 0 and first["distill/kl"] > 0 and first["rl/loss"] != 0
    assert any(0 < m["completions/truncated_frac"] < 1 for m in steps)


@pytest.mark.slow
def test_train_recipe_end_to_end(tmp_path):
    assets = write_tiny_assets(tmp_path / "tiny", warm_up=False)
    out = tmp_path / "run"
    proc = sgpo("train", "--config", str(ROOT / "recipes" / "tiny_cpu.yaml"), "--model_name_or_path", str(assets / "model"),
                "--dataset_name", str(assets / "train.jsonl"), "--output_dir", str(out), "--max_steps", "2", "--report_to", "none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logs if "loss" in m] == [1, 2]  # the command-line override of max_steps won
    assert "reward/guided" in logs[0]


def test_help_lists_commands_and_unknown_command_fails():
    proc = sgpo("--help")
    assert proc.returncode == 0 and "train" in proc.stdout and "selectivity" in proc.stdout
    proc = sgpo("trian")
    assert proc.returncode == 2 and "unknown command 'trian'" in proc.stderr
    proc = sgpo()  # no command: the help, as a usage error
    assert proc.returncode == 2 and "usage: sgpo <command>" in proc.stderr and "selectivity" in proc.stderr


def test_testing_module_help_creates_nothing(tmp_path):
    proc = python("-m", "sgpo.testing", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "usage: python -m sgpo.testing" in proc.stdout and "--no-warm-up" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no folder named --help


def test_unknown_option_and_bad_values_are_clear_errors(tmp_path):
    proc = sgpo("train", "--model_name_or_path", "m", "--dataset_name", "d.jsonl", "--output_dir", str(tmp_path), "--num_generatons", "4")
    assert proc.returncode == 2 and "--num_generatons" in proc.stderr
    proc = sgpo("train", "--model_name_or_path", "m", "--dataset_name", "d.jsonl", "--output_dir", str(tmp_path), "--loss_type", "ppo")
    assert proc.returncode == 2 and "SGPOConfig.loss_type" in proc.stderr
    proc = sgpo("train", "--output_dir", str(tmp_path))
    assert proc.returncode == 2 and "--model_name_or_path and --dataset_name must be given" in proc.stderr


def test_bad_dataset_is_reported_without_traceback(tmp_path):
    assets = write_tiny_assets(tmp_path / "tiny", warm_up=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x", "answer": "1"}) + "\n")
    proc = sgpo("train", "--config", str(ROOT / "recipes" / "tiny_cpu.yaml"), "--model_name_or_path", str(assets / "model"),
                "--dataset_name", str(bad), "--output_dir", str(tmp_path / "o"), "--report_to", "none")
    assert proc.returncode == 1
    assert "bad.jsonl: row 0: missing column 'problem' (columns found: answer, question)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_saved_tiny_tokenizer_round_trips_by_path(tmp_path):
    # transformers 5 would rebuild a Qwen2 folder's tokenizer as Qwen2Tokenizer (other ids)
    from sgpo.modeling import load_tokenizer
    from sgpo.testing import build_tiny_tokenizer

    assets = write_tiny_assets(tmp_path / "tiny", warm_up=False)
    text = "what is 3 plus 4 \\boxed{ 7 }"
    loaded = load_tokenizer(str(assets / "model"))
    assert loaded(text)["input_ids"] == build_tiny_tokenizer()(text)["input_ids"]
    assert loaded.chat_template and loaded.pad_token == "<pad>"
