"""`sgpo train --config recipe.yaml [--field value …]`: SGPO (or GRPO) from a YAML recipe.

Every field of `SGPOConfig` (TRL names where the concept is the same) and of `TrainScriptArguments`
can be set in the recipe and overridden on the command line, as TRL's scripts do. Scale with
`accelerate launch -m sgpo train --config …` (DDP / DeepSpeed, as for any Trainer).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class TrainScriptArguments:
    model_name_or_path: str = field(default=None, metadata={"help": "Policy to train: a local folder or a hub id."})
    dataset_name: str = field(
        default=None, metadata={"help": "Training problems: a .jsonl/.json/.parquet file, a save_to_disk folder or a hub id."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to use when the data set has several."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer (defaults to the model's)."})


def main(argv: list[str] | None = None) -> int:
    from trl import TrlParser

    from sgpo.config import SGPOConfig

    parser = TrlParser((TrainScriptArguments, SGPOConfig), prog="sgpo train")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        script_args, config = parser.parse_args_and_config(argv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"sgpo train: error: {exc}", file=sys.stderr)
        return 2
    missing = [f"--{n}" for n in ("model_name_or_path", "dataset_name") if getattr(script_args, n) is None]
    if missing:
        print(f"sgpo train: error: {' and '.join(missing)} must be given (in the recipe or on the command line)", file=sys.stderr)
        return 2

    from sgpo.data import DataError, load_rows
    from sgpo.modeling import load_tokenizer
    from sgpo.prompts import PromptTooLongError
    from sgpo.trainer import RewardFunctionError, SGPOTrainer

    try:
        tokenizer = load_tokenizer(script_args.tokenizer_name_or_path or script_args.model_name_or_path)
        data = script_args.dataset_name
        if script_args.dataset_split != "train":
            data, _ = load_rows(script_args.dataset_name, split=script_args.dataset_split)
        trainer = SGPOTrainer(model=script_args.model_name_or_path, args=config, processing_class=tokenizer, train_dataset=data)
        trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
        trainer.save_model(config.output_dir)
    except (DataError, PromptTooLongError, RewardFunctionError) as exc:
        print(f"sgpo train: error: {exc}", file=sys.stderr)
        return 1
    if trainer.is_world_process_zero():
        print(f"sgpo train: model and tokenizer saved to {config.output_dir} (metrics: {config.output_dir}/metrics.jsonl)")
    return 0
