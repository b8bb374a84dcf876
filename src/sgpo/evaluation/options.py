"""Command-line options shared by `sgpo eval`, `sgpo selectivity` and `sgpo score-strategies`: model
loading, prompts, data columns.

Prompt format resolution, first match wins, then the single-field options override it:
1. `--prompt-format FILE.json`;
2. `MODEL_DIR/prompt_format.json`, when the model folder has one (a trainer or demo that uses
   non-default templates saves it there, so evaluation prompts the model the way it was trained);
3. the defaults of `sgpo.prompts.PromptFormat` (the `\\boxed{}` instruction, chat template).
The JSON object may hold `template`, `guided_template`, `system_prompt`, `use_chat_template`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from sgpo.data import ColumnMap
from sgpo.prompts import PROMPT_FORMAT_FILE, PromptFormat


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (save_pretrained output) or hub id")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype (default: auto = as saved)",
    )


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("prompt format")
    g.add_argument(
        "--prompt-format",
        default=None,
        metavar="FILE",
        help=f"JSON file with template / guided_template / system_prompt / use_chat_template "
        f"(default: MODEL/{PROMPT_FORMAT_FILE} if present, else the built-in format)",
    )
    g.add_argument("--template", "--prompt-template", default=None, help="autonomous prompt template; must contain {problem}")
    g.add_argument(
        "--guided-template",
        "--guided-prompt-template",
        default=None,
        help="guided prompt template; must contain {problem} and {strategy}",
    )
    g.add_argument("--system-prompt", default=None, help="system message put before the user turn")
    g.add_argument("--no-chat-template", action="store_true", help="use the prompt text as is, without the chat template")


def add_column_arguments(parser: argparse.ArgumentParser, strategy: bool = True, row_id: bool = True) -> None:
    g = parser.add_argument_group("columns")
    g.add_argument("--problem-column", default="problem", help="column with the problem (default: problem)")
    g.add_argument("--answer-column", default="answer", help="column with the gold answer (default: answer)")
    if strategy:
        g.add_argument("--strategy-column", default="strategy", help="column with the rendered strategy (default: strategy)")
    if row_id:
        g.add_argument("--id-column", default="id", help="column with the row id (default: id)")


def columns_from_args(args: argparse.Namespace):
    """The `sgpo.data.ColumnMap` of `add_column_arguments`' options."""

    return ColumnMap(
        problem=args.problem_column,
        answer=args.answer_column,
        strategy=getattr(args, "strategy_column", "strategy"),
        id=getattr(args, "id_column", "id"),
    )


def prompt_format_from_args(args: argparse.Namespace) -> tuple[PromptFormat, str]:
    """The prompt format and where it came from."""
    model_file = Path(str(args.model)) / PROMPT_FORMAT_FILE
    if args.prompt_format:
        fmt, origin = PromptFormat.from_file(Path(args.prompt_format)), args.prompt_format
    elif model_file.is_file():
        fmt, origin = PromptFormat.from_file(model_file), str(model_file)
    else:
        fmt, origin = PromptFormat(), "built-in"
    overrides = {}
    if args.template is not None:
        overrides["template"] = args.template
    if args.guided_template is not None:
        overrides["guided_template"] = args.guided_template
    if args.system_prompt is not None:
        overrides["system_prompt"] = args.system_prompt
    if args.no_chat_template:
        overrides["use_chat_template"] = False
    if overrides:
        fmt, origin = replace(fmt, **overrides), origin + " + command-line options"
    return fmt, origin
