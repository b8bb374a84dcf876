"""`sgpo` command line: one sub-command per module in `sgpo.commands`.

Each command module exposes `main(argv: list[str]) -> int` and owns its own argument parsing, so
importing the CLI stays cheap (torch and transformers load only for the command that needs them).
"""

from __future__ import annotations

import importlib
import sys

from sgpo import __version__

# name -> (module, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("sgpo.commands.train", "train a policy with SGPO (or GRPO) from a YAML recipe"),
    "demo": ("sgpo.commands.demo", "run the strategy-world demo: warm-up, GRPO vs SGPO, evaluation"),
    "experiment": ("sgpo.commands.experiment", "SGPO vs SFT, GRPO, LUFFY and ablations on the strategy world: tuned, multi-seed"),
    "extract": ("sgpo.commands.extract", "extract structured strategies from strong-model responses"),
    "score-strategies": ("sgpo.commands.score_strategies", "score candidate strategies by guided - autonomous accuracy"),
    "library": ("sgpo.commands.library", "build a strategy library; retrieve strategies for problems without one"),
    "eval": ("sgpo.commands.eval", "evaluate a model on math benchmarks (avg@k, pass@k)"),
    "report": ("sgpo.commands.report", "render an HTML report of a training run"),
    "selectivity": ("sgpo.commands.selectivity", "per-token KL(teacher||student) view of guided trajectories"),
    "merge": ("sgpo.commands.merge", "merge a LoRA adapter (use_peft run) into its base model"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: sgpo <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `sgpo <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"sgpo {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"sgpo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
