"""`sgpo train --config recipe.yaml [--field value …]`: SGPO (or GRPO) from a YAML recipe.

Every field of `SGPOConfig` (TRL names where the concept is the same) and of `TrainScriptArguments`
can be set in the recipe and overridden on the command line, as TRL's scripts do. Scale with
`accelerate launch -m sgpo train --config …` (DDP / DeepSpeed, as for any Trainer).

Checked before anything is loaded, each with one error line: the recipe's keys (an unknown key is
named, with the nearest field; a field of TRL's `GRPOConfig` that sgpo does not support is said so),
unknown options, what `sgpo.dry_run.run_checks` checks (the model path or hub id, the reward
functions, `report_to`), and `--resume_from_checkpoint true|last`, which means the last `checkpoint-*`
folder of `output_dir`. A run's `config.yaml` is a recipe that reruns it (it names the model and the
data). SIGTERM / SIGUSR1 end the run at the next step with a checkpoint (`sgpo.checkpoints.Preemption`)
and exit status 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import json
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from sgpo.checkpoints import OutputDirError, TrainingPreempted, last_complete_checkpoint
from sgpo.commands.common import error, join_negative_values
from sgpo.config import SGPOConfig
from sgpo.config_fields import BATCH_SIZE_HELP, TRL_UNSUPPORTED, grouped_fields
from sgpo.data import DataError, load_rows
from sgpo.dry_run import dry_run, run_checks
from sgpo.modeling import load_tokenizer
from sgpo.planning import ENGINES
from sgpo.process_group import end_process_group
from sgpo.prompts import PromptTooLongError
from sgpo.rewards import RewardFunctionError, RewardSpecError
from sgpo.trainer import SGPOTrainer

COMMAND = "train"
_OPTION = re.compile(r"^--([A-Za-z][\w-]*)(=.*)?$")  # an option (a value such as "--- note" is not one)


@dataclass
class TrainScriptArguments:
    model_name_or_path: str = field(default=None, metadata={"help": "Policy to train: a local folder or a hub id."})
    dataset_name: str = field(
        default=None, metadata={"help": "Training problems: a .jsonl/.json/.parquet file, a save_to_disk folder or a hub id."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to use when the data set has several."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer (defaults to the model's)."})
    dry_run: bool = field(
        default=False,
        metadata={
            "help": "Check the recipe without loading any weight: config, data schema and a sample, templates, prompt "
            "lengths (with the tokenizer when it is available locally), batch sizes and a rough memory estimate."
        },
    )
    num_processes: int | None = field(
        default=None, metadata={"help": "For --dry-run: processes (GPUs) of the run (default: WORLD_SIZE, else 1)."}
    )
    engine: str | None = field(
        default=None,
        metadata={
            "help": "For --dry-run: ddp, zero2, zero3 or fsdp2, the engine of the memory estimate (default: the one "
            "accelerate launch set up, else all of them)."
        },
    )


class RecipeError(ValueError):
    """A recipe file or a command-line option that cannot be used; the message is one line."""


def build_parser():
    """TRL's parser over `TrainScriptArguments` and `SGPOConfig`, with `--help` grouped by topic."""
    from trl import TrlParser

    parser = TrlParser(
        (TrainScriptArguments, SGPOConfig),
        prog="sgpo train",
        usage="sgpo train --config RECIPE.yaml [--option value ...]   (all options: below, by topic)",
        description="Train a policy with SGPO (or GRPO: --distill_coef 0 --num_guided_generations 0) from a YAML "
        "recipe. Every option below can be a recipe key; options on the command line override the recipe. "
        "Options may be written with underscores or dashes (--max_steps, --max-steps).",
    )
    _group_options(parser)
    return parser


def _group_options(parser: argparse.ArgumentParser) -> None:
    """Re-file the options into the topic groups of `sgpo.config_fields` (recipe first, the inherited
    TrainingArguments last) and give `per_device_train_batch_size` its meaning here."""
    from transformers import TrainingArguments

    inherited = {f.name for f in fields(TrainingArguments)}
    names = [f.name for f in fields(TrainScriptArguments)] + [f.name for f in fields(SGPOConfig)]
    ours = {f.name for f in fields(TrainScriptArguments)} | ({f.name for f in fields(SGPOConfig)} - inherited)
    default_group = next(g for g in parser._action_groups if any(a.dest == "learning_rate" for a in g._group_actions))  # noqa: SLF001
    recipe = parser.add_argument_group("recipe")
    recipe.add_argument(
        "--config",
        metavar="RECIPE.yaml",
        default=argparse.SUPPRESS,
        help="YAML recipe: any option below as `key: value` (e.g. recipes/tiny_cpu.yaml)",
    )
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in default_group._group_actions:  # noqa: SLF001
        by_dest.setdefault(action.dest, []).append(action)
    for title, description, group_names in grouped_fields(names, ours):
        group = parser.add_argument_group(title, description or None)
        for name in group_names:
            for action in by_dest.get(name, []):
                default_group._group_actions.remove(action)  # noqa: SLF001
                group._group_actions.append(action)  # noqa: SLF001
                if name == "per_device_train_batch_size":
                    action.help = BATCH_SIZE_HELP


def _known_dests(parser: argparse.ArgumentParser) -> list[str]:
    return sorted({a.dest for a in parser._actions if a.dest not in ("help", "config")})  # noqa: SLF001


def _nearest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(name: str, known: list[str]) -> str:
    """What to say about an unknown option or key: a field of TRL's GRPOConfig that sgpo does not
    support (and why), or the nearest known one."""
    from dataclasses import fields as dataclass_fields

    from trl import GRPOConfig

    if name in {f.name for f in dataclass_fields(GRPOConfig)}:
        reason = TRL_UNSUPPORTED.get(name, "not implemented here")
        return f"is TRL's GRPOConfig field, which sgpo does not support: {reason}"
    return f"is not an option{_nearest(name, known)}"


def normalized_argv(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--config=X` as `--config X` (TRL reads only that form), negative numbers as values
    (`--learning_rate -1e-3`); raises `RecipeError` for an unknown option, naming the nearest one."""

    out: list[str] = []
    for token in join_negative_values(argv):
        if token.startswith("--config="):
            out += ["--config", token.split("=", 1)[1]]
        else:
            out.append(token)
    known = _known_dests(parser)
    for token in out:
        if token == "--":
            break
        option = _OPTION.match(token)
        if option and token != "--config":
            name = option.group(1)
            if f"--{name}" not in parser._option_string_actions:  # noqa: SLF001
                said = _unknown(name.replace("-", "_"), known)
                if said.startswith("is TRL's"):
                    raise RecipeError(f"--{name} {said}")
                raise RecipeError(f"unknown option --{name}{_nearest(name.replace('-', '_'), known)}")
    return out


def check_recipe(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """The recipe named by `--config` exists, is a YAML mapping and has only known keys (plus TRL's
    `env`); raises `RecipeError` naming the file and the first problem."""
    import yaml

    if "--config" not in argv:
        return
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise RecipeError("--config needs a recipe file")
    path = Path(argv[i + 1])
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise RecipeError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of option: value, got {type(recipe).__name__}")
    known = _known_dests(parser)
    for key in recipe:
        if key != "env" and key not in known:
            said = _unknown(str(key), known)
            if said.startswith("is TRL's"):
                raise RecipeError(f"{path}: key {key!r} {said}")
            raise RecipeError(f"{path}: unknown key {key!r}{_nearest(str(key), known)}")


def resolve_resume(value, output_dir: str) -> str | None:
    """`--resume_from_checkpoint`: true / last → the last complete `checkpoint-*` folder of `output_dir`
    (`sgpo.checkpoints`);
    false / none / unset → None; anything else must be a checkpoint folder. Raises `RecipeError`."""
    if value is None or value is False or str(value).strip().lower() in ("false", "none", "no", ""):
        return None
    if value is True or str(value).strip().lower() in ("true", "last", "yes"):
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise RecipeError(f"--resume_from_checkpoint {value}: no complete checkpoint-* folder in {output_dir} to resume from")
        return last
    if not Path(str(value)).is_dir():
        raise RecipeError(f"--resume_from_checkpoint {value}: no such checkpoint folder (or give true / last)")
    if not (Path(str(value)) / "trainer_state.json").is_file():
        raise RecipeError(f"--resume_from_checkpoint {value}: an incomplete checkpoint (no trainer_state.json)")
    return str(value)


def _trainer(script_args, config) -> SGPOTrainer:
    """The run's trainer; its `config.yaml` will name the model and the data, so that it reruns the run."""
    tokenizer = load_tokenizer(script_args.tokenizer_name_or_path or script_args.model_name_or_path)
    data = script_args.dataset_name
    if script_args.dataset_split != "train":
        data, _ = load_rows(script_args.dataset_name, split=script_args.dataset_split)
    trainer = SGPOTrainer(model=script_args.model_name_or_path, args=config, processing_class=tokenizer, train_dataset=data)
    trainer.run_sources = {
        "model_name_or_path": script_args.model_name_or_path,
        "dataset_name": script_args.dataset_name,
        "dataset_split": script_args.dataset_split,
        "tokenizer_name_or_path": script_args.tokenizer_name_or_path,
    }
    return trainer


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = normalized_argv(parser, argv)
        check_recipe(parser, argv)
        if any(t.split("=")[0] in ("--dry-run", "--dry_run") for t in argv):
            import torch

            if not torch.cuda.is_available():  # a GPU recipe checked on a CPU machine: bf16 would be refused
                argv = [*argv, "--use_cpu", "true"]
        script_args, config = parser.parse_args_and_config(argv)
        resume = resolve_resume(config.resume_from_checkpoint, config.output_dir)
    except (RecipeError, ValueError, FileNotFoundError) as exc:
        return error(COMMAND, str(exc))
    missing = [f"--{n}" for n in ("model_name_or_path", "dataset_name") if getattr(script_args, n) is None]
    if missing:
        return error(COMMAND, f"{' and '.join(missing)} must be given (in the recipe or on the command line)")
    if script_args.dry_run:
        if script_args.engine is not None and script_args.engine not in ENGINES:
            return error(COMMAND, f"--engine {script_args.engine}: must be one of {', '.join(ENGINES)}")
        return dry_run(
            script_args,
            config,
            script_args.num_processes,
            script_args.engine,
            out=lambda line: print(f"sgpo {COMMAND} --dry-run: {line}", flush=True),
        )
    issues = run_checks(script_args, config)  # what the dry run checks first: the model, the rewards, report_to
    if issues:
        return error(COMMAND, issues[0], 1)
    config.resume_from_checkpoint = resume
    try:
        trainer = _trainer(script_args, config)
        if trainer.is_world_process_zero():
            print(f"sgpo {COMMAND}: {trainer.batch_summary()}", flush=True)
            if resume is not None:
                step = json.loads((Path(resume) / "trainer_state.json").read_text()).get("global_step")
                print(f"sgpo {COMMAND}: resuming from {resume} (step {step})", flush=True)
        trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(config.output_dir)
        main_process = trainer.is_world_process_zero()
    except TrainingPreempted as exc:
        return error(COMMAND, str(exc), exc.exit_code)
    except (DataError, PromptTooLongError, RewardFunctionError, RewardSpecError, OutputDirError) as exc:
        return error(COMMAND, str(exc), 1)
    # end the process group while the interpreter is whole, so that gloo's threads are joined, not left
    # running into its finalization (sgpo.process_group): first the trainer, whose DDP wrapper holds the group
    del trainer
    gc.collect()
    end_process_group()
    if main_process:
        print(f"sgpo train: model and tokenizer saved to {config.output_dir} (metrics: {config.output_dir}/metrics.jsonl)")
    return 0
