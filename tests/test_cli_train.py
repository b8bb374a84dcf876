"""`sgpo train` through the real CLI (a subprocess), with the tiny recipe shipped in recipes/."""

import importlib.util
import json
import os
import re
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


def readme_block(heading: str) -> list[list[str]]:
    """The commands of the first ```bash block under `heading` in the README (comments dropped)."""
    import shlex

    text = (ROOT / "README.md").read_text()
    block = text[text.index(heading) :].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_train_block_runs_and_the_tiny_run_moves_every_part_of_the_method(tmp_path):
    # the README's Train block, top to bottom in a fresh folder (accelerate launch aside): the
    # recipe's own relative paths (runs/tiny/...), the GRPO run in its own folder
    import importlib.util

    commands = [c for c in readme_block("## Train") if c[0] != "accelerate"]
    assert [c[:2] for c in commands] == [
        ["python", "-m"],
        ["sgpo", "train"],
        ["sgpo", "train"],
        ["sgpo", "train"],
        ["sgpo", "report"],
    ]
    assert "--use_vllm" in commands[3]
    if importlib.util.find_spec("vllm") is None and os.environ.get("SGPO_REQUIRE_VLLM") != "1":
        commands.pop(3)  # the vLLM line needs `make vllm` (make test installs it)
    for cmd in commands:
        argv = cmd[1:] if cmd[0] == "python" else ["-m", "sgpo", *cmd[1:]]
        argv = [str(ROOT / a) if a.startswith("recipes/") else a for a in argv]
        proc = python(*argv, cwd=tmp_path)
        assert proc.returncode == 0, (cmd, proc.stderr[-3000:])
    runs = tmp_path / "runs" / "tiny"
    logs = [json.loads(line) for line in (runs / "sgpo" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in logs if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    first = steps[0]
    # a random model scores 0 everywhere (loss, rewards, weight 0, no KL, everything truncated);
    # the warmed-up one shows every part of the method from the first step
    assert first["reward/auto"] > 0 and first["reward/guided"] > first["reward/auto"]
    assert first["distill/weight_mean"] > 0 and first["distill/kl"] > 0 and first["rl/loss"] != 0
    assert any(0 < m["completions/truncated_frac"] < 1 for m in steps)
    # the ranges the README quotes, read from the README itself (so the text cannot drift from the runs)
    text = " ".join((ROOT / "README.md").read_text().split())
    kl_lo, kl_hi, w_lo, w_hi = map(
        float,
        re.search(
            r"distillation KL of (\d+\.\d+)–(\d+\.\d+) nats/token and a mean instance weight of (\d+\.\d+)–(\d+\.\d+)",
            text,
        ).groups(),
    )
    assert all(kl_lo <= m["distill/kl"] <= kl_hi for m in steps), [m["distill/kl"] for m in steps]
    assert all(w_lo <= m["distill/weight_mean"] <= w_hi for m in steps), [m["distill/weight_mean"] for m in steps]
    grpo = [json.loads(line) for line in (runs / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in grpo if "loss" in m] == [1, 2, 3, 4] and "distill/kl" not in grpo[0]
    assert (runs / "sgpo" / "report" / "index.html").is_file()
    if (runs / "sgpo-vllm").exists():
        vllm_steps = [m for m in map(json.loads, (runs / "sgpo-vllm" / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
        assert len(vllm_steps) == 4 and all(m["sampling/sampling_logp_difference/max"] < 1e-4 for m in vllm_steps)


@pytest.mark.slow
def test_train_recipe_end_to_end(tmp_path):
    assets = write_tiny_assets(tmp_path / "tiny", warm_up=False)
    out = tmp_path / "run"
    proc = sgpo(
        "train",
        "--config",
        str(ROOT / "recipes" / "tiny_cpu.yaml"),
        "--model_name_or_path",
        str(assets / "model"),
        "--dataset_name",
        str(assets / "train.jsonl"),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--report_to",
        "none",
    )
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
    proc = sgpo(
        "train", "--model_name_or_path", "m", "--dataset_name", "d.jsonl", "--output_dir", str(tmp_path), "--num_generatons", "4"
    )
    assert proc.returncode == 2 and "--num_generatons" in proc.stderr
    proc = sgpo(
        "train", "--model_name_or_path", "m", "--dataset_name", "d.jsonl", "--output_dir", str(tmp_path), "--loss_type", "ppo"
    )
    assert proc.returncode == 2 and "SGPOConfig.loss_type" in proc.stderr
    proc = sgpo("train", "--output_dir", str(tmp_path))
    assert proc.returncode == 2 and "--model_name_or_path and --dataset_name must be given" in proc.stderr


def test_bad_dataset_is_reported_without_traceback(tmp_path):
    assets = write_tiny_assets(tmp_path / "tiny", warm_up=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x", "answer": "1"}) + "\n")
    proc = sgpo(
        "train",
        "--config",
        str(ROOT / "recipes" / "tiny_cpu.yaml"),
        "--model_name_or_path",
        str(assets / "model"),
        "--dataset_name",
        str(bad),
        "--output_dir",
        str(tmp_path / "o"),
        "--report_to",
        "none",
    )
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


def test_recipe_and_option_mistakes_are_one_line_before_anything_loads(tmp_path, capsys):
    from sgpo.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((ROOT / "recipes" / "tiny_cpu.yaml").read_text() + "num_generatoins: 4\n")
    assert main(["train", "--config", str(recipe)]) == 2
    assert (
        capsys.readouterr().err
        == f"sgpo train: error: {recipe}: unknown key 'num_generatoins' (did you mean 'num_generations'?)\n"
    )
    assert main(["train", "--config", str(ROOT / "recipes" / "tiny_cpu.yaml"), "--distill_coeff", "0"]) == 2
    assert "unknown option --distill_coeff (did you mean 'distill_coef'?)" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("learning_rate: 1e-3\nmax_steps: [1,\n")
    assert main(["train", "--config", str(broken)]) == 2
    assert capsys.readouterr().err.startswith(f"sgpo train: error: {broken}: not valid YAML (line 3)")


def test_model_and_checkpoint_mistakes_are_one_line(tmp_path, capsys):
    from sgpo.cli import main

    base = [
        "train",
        "--config",
        str(ROOT / "recipes" / "tiny_cpu.yaml"),
        "--dataset_name",
        str(tmp_path / "d.jsonl"),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    # a negative number is a value (argparse alone: "expected one argument"), and an illegal one is named
    # by the config before any model is looked at
    assert main([*base, "--learning_rate", "-1e-3", "--model_name_or_path", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == "sgpo train: error: SGPOConfig.learning_rate: must be ≥ 0, got -0.001\n"
    assert main([*base, "--model_name_or_path", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == f"sgpo train: error: {tmp_path / 'nope'}: no such model folder\n"
    assets = write_tiny_assets(tmp_path / "tiny", warm_up=False)
    capsys.readouterr()
    # true means the last checkpoint of output_dir, and there is none
    assert main([*base, "--model_name_or_path", str(assets / "model"), "--resume_from_checkpoint", "true"]) == 2
    assert capsys.readouterr().err == (
        f"sgpo train: error: --resume_from_checkpoint true: no complete checkpoint-* folder in "
        f"{tmp_path / 'out'} to resume from\n"
    )


def test_resume_true_and_last_mean_the_last_checkpoint(tmp_path):
    from sgpo.commands.train import RecipeError, resolve_resume

    out = tmp_path / "run"
    for step in (2, 10, 4):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    for value in (True, "true", "True", "last"):
        assert resolve_resume(value, str(out)) == str(out / "checkpoint-10")
    for value in (None, False, "false", "none"):
        assert resolve_resume(value, str(out)) is None
    assert resolve_resume(str(out / "checkpoint-4"), str(out)) == str(out / "checkpoint-4")
    with pytest.raises(RecipeError, match="no such checkpoint folder"):
        resolve_resume(str(out / "checkpoint-99"), str(out))


@pytest.mark.slow
def test_resume_true_on_the_command_line_resumes_from_the_last_checkpoint(tmp_path):
    assets = write_tiny_assets(tmp_path / "tiny", warm_up=False)
    args = [
        "train",
        "--config",
        str(ROOT / "recipes" / "tiny_cpu.yaml"),
        "--model_name_or_path",
        str(assets / "model"),
        "--dataset_name",
        str(assets / "train.jsonl"),
        "--output_dir",
        str(tmp_path / "run"),
        "--report_to",
        "none",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
    ]
    first = sgpo(*args, "--max_steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint-2").is_dir()
    again = sgpo(*args, "--max_steps", "3", "--resume_from_checkpoint", "true")
    assert again.returncode == 0, again.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]


def test_hub_id_without_network_fails_at_once(tmp_path):
    import socket

    with socket.socket() as s:  # a hub endpoint where nothing listens: what a machine without network sees
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=str(ROOT / "src"), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{port}")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgpo",
            "train",
            "--config",
            str(ROOT / "recipes" / "tiny_cpu.yaml"),
            "--model_name_or_path",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "--output_dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "sgpo train: error: Qwen/Qwen2.5-0.5B-Instruct: no such model folder, not in the Hugging "
        f"Face cache, and the hub (http://127.0.0.1:{port}) cannot be reached"
    )
    env["HF_HUB_OFFLINE"] = "1"
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": "What is 2+2?", "answer": "4"}) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sgpo", "eval", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--benchmark", str(data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        "sgpo eval: error: Qwen/Qwen2.5-0.5B-Instruct: no such model folder, and not in the Hugging Face cache "
        "(HF_HUB_OFFLINE is set)"
    )


def test_train_help_lists_the_recipe_and_sgpo_fields_first(capsys):
    from sgpo.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    groups = [line[:-1] for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert groups[:8] == [
        "options",
        "recipe",
        "model and data",
        "rollouts",
        "rewards and RL term",
        "distillation",
        "instance weighting",
        "data columns",
    ]
    assert groups[-2:] == ["run (common TrainingArguments)", "other TrainingArguments"]
    body = text[text.index("\noptions:") :]  # the option listing, after usage and description
    assert body.index("--config RECIPE.yaml") < body.index("--num_generations") < body.index("--distill_coef")
    assert body.index("--distill_coef") < body.index("--instance_weighting") < body.index("--adam_beta1")
    assert "Problems per device per micro-step (not completions" in " ".join(text.split())


# ---------------------------------------------------------------------------------------- a TRL user (issue 20)


def test_reward_and_trl_field_mistakes_are_one_line_before_anything_loads(tmp_path, capsys):
    from sgpo.cli import main

    assets = write_tiny_assets(tmp_path / "tiny", n=4, warm_up=False)
    base = ["train", "--config", str(ROOT / "recipes" / "tiny_cpu.yaml"), "--model_name_or_path", str(assets / "model"),
            "--dataset_name", str(assets / "train.jsonl"), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    capsys.readouterr()
    cases = [
        (["--reward_funcs", "acuracy"], "rewards: unknown reward function 'acuracy'; known: accuracy, accuracy_reward, boxed_format"),
        (["--reward_funcs", "accuracy", "boxed_format", "--reward_weights", "1.0"],
         "rewards: reward_weights has 1 value(s) for 2 reward function(s) (accuracy_reward, boxed_format_reward)"),
        (["--reward_funcs", "no_such_module:fn"], "rewards: reward function 'no_such_module:fn': module 'no_such_module' cannot be imported"),
        (["--reward_funcs", str(tmp_path / "missing.py") + ":fn"], f"rewards: reward function '{tmp_path / 'missing.py'}:fn': no such file"),
        (["--correctness_reward", "boxed_format"], "rewards: correctness_reward 'boxed_format' is not one of the reward functions (accuracy_reward)"),
    ]  # fmt: skip
    for extra, line in cases:
        assert main([*base, *extra]) == 1, extra
        err = capsys.readouterr().err
        assert err.startswith(f"sgpo train: error: {line}") and err.count("\n") == 1, (extra, err)
    if importlib.util.find_spec("wandb") is None:
        assert main([*base, "--report_to", "wandb"]) == 1
        assert capsys.readouterr().err == (
            "sgpo train: error: report_to wandb: the wandb package is not installed (pip install wandb), or pass --report_to none\n"
        )
    # a field of TRL's GRPOConfig that sgpo does not support: said so, on the command line and in a recipe
    assert main([*base, "--entropy_coef", "0.01"]) == 2
    assert capsys.readouterr().err == (
        "sgpo train: error: --entropy_coef is TRL's GRPOConfig field, which sgpo does not support: no entropy mask or "
        "entropy bonus in the RL term (TRL's entropy is logged as a metric)\n"
    )
    recipe = tmp_path / "trl.yaml"
    recipe.write_text((ROOT / "recipes" / "tiny_cpu.yaml").read_text() + "multi_objective_aggregation: normalize_then_sum\n")
    assert main(["train", "--config", str(recipe)]) == 2
    assert capsys.readouterr().err.startswith(
        f"sgpo train: error: {recipe}: key 'multi_objective_aggregation' is TRL's GRPOConfig field, which sgpo does not support"
    )
    assert not (tmp_path / "out").exists()  # nothing ran


REWARDS_MODULE = """
def length_reward(prompts, completions, completion_ids, **_):
    return [len(ids) / 10 for ids in completion_ids]
"""
REWARDS_FILE = """
def autonomous_only(prompts, completions, guided, **_):
    return [None if g else 0.5 for g in guided]
"""


@pytest.mark.slow
def test_trl_reward_specs_names_and_logging_on_the_command_line(tmp_path):
    # TRL's habits on the command line: accuracy_reward by the name it is logged under, a module of the
    # current folder (no PYTHONPATH=.), a file.py:function returning None on guided rows, scale_rewards
    # false, generation_batch_size, log_completions; TRL's metrics are logged
    assets = write_tiny_assets(tmp_path / "tiny", n=8)
    (tmp_path / "my_rewards.py").write_text(REWARDS_MODULE)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "rewards_file.py").write_text(REWARDS_FILE)
    proc = sgpo(
        "train", "--config", str(ROOT / "recipes" / "tiny_cpu.yaml"), "--model_name_or_path", str(assets / "model"),
        "--dataset_name", str(assets / "train.jsonl"), "--output_dir", str(tmp_path / "out"), "--report_to", "none",
        "--reward_funcs", "accuracy_reward", "my_rewards:length_reward", "more/rewards_file.py:autonomous_only",
        "--scale_rewards", "false", "--generation_batch_size", "4", "--max_steps", "2",
        "--log_completions", "true", "--num_completions_to_print", "3",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [m["step"] for m in steps] == [1, 2]
    # generation_batch_size 4 = 2 problems per step × 2 steps: one rollout serves both steps
    assert "reward/auto" in steps[0] and "reward/auto" not in steps[1]
    first = steps[0]
    for key in ("rewards/accuracy_reward", "rewards/length_reward", "entropy", "reward_std", "frac_reward_zero_std"):
        assert key in first, key
    assert first["rewards/autonomous_only"] == 0.5  # the mean over the completions it scored
    # the completions table (TRL's print_prompt_completions_sample): the reward columns, 3 rows
    assert "Step 1" in proc.stdout and "autonomous_only" in proc.stdout and "length_reward" in proc.stdout
    assert proc.stdout.count("autonomous ") + proc.stdout.count("guided ") >= 3


@pytest.mark.slow
def test_a_runs_config_yaml_reruns_it_and_the_report_names_the_model_and_data(tmp_path):
    assets = write_tiny_assets(tmp_path / "tiny", n=8, warm_up=False)
    first = sgpo(
        "train", "--config", str(ROOT / "recipes" / "tiny_cpu.yaml"), "--model_name_or_path", str(assets / "model"),
        "--dataset_name", str(assets / "train.jsonl"), "--output_dir", str(tmp_path / "a"), "--report_to", "none",
        "--max_steps", "1", "--num_generations", "3",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    import yaml

    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["model_name_or_path"] == str(assets / "model") and saved["dataset_name"] == str(assets / "train.jsonl")
    # an evaluation of the first weights (sgpo eval writes MODEL/eval/...): stale once the run is overwritten
    (tmp_path / "a" / "eval" / "heldout").mkdir(parents=True)
    (tmp_path / "a" / "eval" / "heldout" / "results.json").write_text('{"benchmarks": {}}')
    again = sgpo("train", "--config", str(tmp_path / "a" / "config.yaml"), "--overwrite_output_dir", "true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (tmp_path / "a" / "eval").exists()  # removed with the weights it described
    rerun = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert {k: v for k, v in rerun.items() if k != "overwrite_output_dir"} == {
        k: v for k, v in saved.items() if k != "overwrite_output_dir"
    }
    report = sgpo("report", str(tmp_path / "a"))
    assert report.returncode == 0, report.stderr[-3000:]
    page = (tmp_path / "a" / "report" / "index.html").read_text()
    assert f"<td>model_name_or_path</td><td>{assets / 'model'}</td>" in page
    assert f"<td>dataset_name</td><td>{assets / 'train.jsonl'}</td>" in page
