"""`sgpo selectivity`: per-token KL(teacher ‖ student) on guided trajectories, as an HTML view.

    sgpo selectivity --model runs/demo/warmup --input runs/demo/world/heldout.jsonl --limit 50 --out runs/demo/selectivity

Writes OUT/selectivity.html, OUT/summary.json, OUT/tokens.jsonl, OUT/kl_concentration.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sgpo.commands.common import check_model, error, parse_args
from sgpo.data import DataError, load_problems
from sgpo.evaluation.generation import load_model_and_tokenizer
from sgpo.evaluation.options import (
    add_column_arguments,
    add_model_arguments,
    add_prompt_arguments,
    columns_from_args,
    prompt_format_from_args,
)
from sgpo.evaluation.selectivity import build_trajectories, score_trajectories, summarize, write_outputs

COMMAND = "selectivity"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sgpo selectivity",
        description="Per-token KL(teacher || student) on guided trajectories: teacher = the model with the "
        "strategy in its prompt, student = the same model without it, scoring the same tokens. Trajectories are "
        "the rows' 'response' column, or one completion sampled with the strategy when a row has none. "
        "Options may be written with dashes or underscores (--max-new-tokens, --max_new_tokens).",
    )
    add_model_arguments(p)
    p.add_argument(
        "--input",
        "--data",
        dest="input",
        required=True,
        help="JSONL/JSON/parquet with problem, strategy and optionally "
        "response and critical_spans ([[start, end], ...] character offsets into response, end exclusive)",
    )
    p.add_argument("--limit", "--n", dest="limit", type=int, default=None, help="use the first N rows (default: all)")
    p.add_argument("--out", "--output", dest="out", required=True, help="output folder")
    p.add_argument(
        "--max-new-tokens", type=int, default=256, help="token limit when a guided completion has to be sampled (default 256)"
    )
    p.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature for rows without a response (default 0 = greedy)"
    )
    p.add_argument(
        "--kl-temperature",
        type=float,
        default=1.0,
        help="temperature applied to both distributions before the KL (default 1, as the trainer)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    add_prompt_arguments(p)
    add_column_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if (args.limit is not None and args.limit < 1) or args.max_new_tokens < 1 or args.kl_temperature <= 0:
        return error(COMMAND, "--limit and --max-new-tokens must be >= 1 and --kl-temperature > 0")
    import matplotlib

    matplotlib.use("Agg")

    def say(msg: str) -> None:
        print(f"[sgpo selectivity] {msg}", file=sys.stderr, flush=True)

    try:
        fmt, origin = prompt_format_from_args(args)
        rows = load_problems(args.input, columns=columns_from_args(args), require_answer=False, require_strategy=True).to_list()
    except (DataError, ValueError) as exc:
        return error(COMMAND, str(exc), 1)
    rows = rows[: args.limit] if args.limit else rows
    if (code := check_model(COMMAND, args.model)) is not None:
        return code
    try:
        model, tokenizer = load_model_and_tokenizer(args.model, device=args.device, dtype=args.dtype)
    except (OSError, ValueError) as exc:
        return error(COMMAND, f"cannot load {args.model}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", 1)
    say(f"{len(rows)} rows from {args.input}; prompt format: {origin}")
    try:
        trajs = build_trajectories(
            model,
            tokenizer,
            rows,
            prompt_format=fmt,
            source_name=str(args.input),
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
    except DataError as exc:
        return error(COMMAND, str(exc), 1)
    score_trajectories(model, tokenizer, trajs, prompt_format=fmt, temperature=args.kl_temperature)
    summary = summarize(trajs)
    summary.update(model=str(args.model), data=str(args.input), prompt_format=origin, kl_temperature=args.kl_temperature)
    paths = write_outputs(
        trajs, summary, Path(args.out), title=f"Selectivity of KL(teacher ‖ student): {Path(str(args.model)).name}"
    )
    tops = ", ".join(f"top {k}: {'–' if v is None else f'{100 * v:.1f}%'}" for k, v in summary["top_mass_share"].items())
    say(f"{summary['tokens']} tokens; KL mass on {tops}")
    if "critical" in summary:
        c = summary["critical"]
        fmt_pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        say(f"critical tokens: {fmt_pct(c['token_share'])} of tokens carry {fmt_pct(c['kl_mass_share'])} of the KL mass")
    print(paths["html"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
