"""What every `sgpo` sub-command shares: one flag style, one error format, model checks.

- Flags may be written with dashes or underscores (`--max-new-tokens` or `--max_new_tokens`), as
  `sgpo train` (Hugging Face's parser) always accepted: `parse_args` rewrites underscores before
  argparse sees them.
- A negative number is a value, also in scientific notation (`--learning_rate -1e-3`; argparse
  alone reads `-1e-3` as an option and says "expected one argument").
- Errors are one line, `sgpo <command>: error: <message>`, on stderr (argparse's own errors have the
  same prefix since every parser's `prog` is `sgpo <command>`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from sgpo.modeling import model_source_error

_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf$|^-nan$", re.IGNORECASE)


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--opt -1e-3` → `--opt=-1e-3`, so that a negative number is read as the option's value."""
    out: list[str] = []
    for token in argv:
        prev = out[-1] if out else ""
        if _NUMBER.match(token) and prev.startswith("--") and "=" not in prev and prev != "--":
            out[-1] = f"{prev}={token}"
        else:
            out.append(token)
    return out


def dashed_flags(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """`--max_new_tokens 8` → `--max-new-tokens 8` (also in `--opt=value` form) for the options
    `parser` knows with dashes; tokens after a bare `--` are left alone."""
    known = set(parser._option_string_actions)  # noqa: SLF001 - argparse has no public listing
    out: list[str] = []
    rest = False
    for token in argv:
        if not rest and token.startswith("--") and token != "--":
            name, eq, value = token.partition("=")
            dashed = "--" + name[2:].replace("_", "-")
            if name not in known and dashed in known:
                token = dashed + eq + value
        rest = rest or token == "--"
        out.append(token)
    return out


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parser.parse_args` with both flag styles and negative numbers as values."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return parser.parse_args(dashed_flags(join_negative_values(argv), parser))


def error(command: str, message: str, code: int = 2) -> int:
    """Print `sgpo <command>: error: <message>` to stderr and return `code` (the exit status)."""
    print(f"sgpo {command}: error: {message}", file=sys.stderr, flush=True)
    return code


def check_model(command: str, model: str) -> int | None:
    """None when `model` can be loaded (see `sgpo.modeling.model_source_error`), else the exit status
    after one error line."""

    problem = model_source_error(str(model))
    return None if problem is None else error(command, problem, 1)
