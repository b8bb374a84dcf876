"""`sgpo score-strategies`: score candidate strategies by guided minus autonomous accuracy of a policy."""

from __future__ import annotations

import argparse
import sys

from sgpo.commands.common import check_model, error, parse_args
from sgpo.data import DataError
from sgpo.evaluation.options import add_column_arguments, add_prompt_arguments, columns_from_args, prompt_format_from_args
from sgpo.prompts import PromptTooLongError
from sgpo.sampling import SamplingConfig
from sgpo.strategies.run_progress import report_summary
from sgpo.strategies.scoring import ScoringConfig, score_strategies

COMMAND = "score-strategies"

EPILOG = """example:
  sgpo score-strategies --input strategies.jsonl --output best.jsonl --model Qwen/Qwen2.5-Math-1.5B \\
      --k 8 --max-candidates 4 --max-new-tokens 1024

The input is typically `sgpo extract` output (rows with status != ok are ignored), with several rows
(candidate strategies) per problem. Reruns with the same output (or --cache) resume. Options may be
written with dashes or underscores (--max-new-tokens, --max_new_tokens).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sgpo score-strategies",
        description="For each problem: k guided vs k autonomous rollouts of a policy; score = guided accuracy - "
        "autonomous accuracy; keep the best of at most n candidate strategies.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input", "--data", dest="input", required=True, help="file / data set with problem, answer and strategy columns"
    )
    p.add_argument(
        "--output",
        "--out",
        dest="output",
        required=True,
        help="one row per problem with the best strategy and its score (.jsonl / .parquet)",
    )
    p.add_argument("--model", required=True, help="the policy: a local path or hub id")
    p.add_argument("--candidates-output", default=None, help="also write every candidate with its score here")
    p.add_argument("--cache", default=None, help="rollout-result cache (SQLite) for resuming (default: OUTPUT.cache.sqlite)")
    p.add_argument("--k", type=int, default=8, help="rollouts per prompt, guided and autonomous each (default: 8)")
    p.add_argument("--max-candidates", type=int, default=4, help="candidate strategies scored per problem, n (default: 4)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="completion length limit (default: 512)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy (default: 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling top-p (default: 1.0)")
    p.add_argument("--batch-size", type=int, default=None, help="prompts per generate call (default: all of one problem)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument(
        "--max-prompt-length", type=int, default=None, help="error out on longer prompts (never truncated; default: no limit)"
    )
    p.add_argument("--min-score", type=float, default=None, help="drop the strategy of problems whose best score is below this")
    p.add_argument("--device", default=None, help="device for the policy (default: cuda if available, else cpu)")
    p.add_argument(
        "--group-by",
        default="problem",
        help="column identifying a problem; rows sharing it are candidates of one problem (default: problem)",
    )
    p.add_argument("--summary-json", default=None, help="also write the run summary to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines")
    add_column_arguments(p, row_id=False)
    add_prompt_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    for name in ("k", "max_candidates", "max_new_tokens"):
        if getattr(args, name) < 1:
            return error(COMMAND, f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if (code := check_model(COMMAND, args.model)) is not None:
        return code

    try:
        import torch

        fmt, _ = prompt_format_from_args(args)
        config = ScoringConfig(
            sampling=SamplingConfig(
                k=args.k, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
            ),
            max_candidates=args.max_candidates,
            batch_size=args.batch_size,
            max_prompt_length=args.max_prompt_length,
            min_score=args.min_score,
            prompt_format=fmt,
            columns=columns_from_args(args),
            group_by=args.group_by,
        )
        summary = score_strategies(
            args.input,
            args.output,
            args.model,
            config=config,
            cache=args.cache,
            candidates_output=args.candidates_output,
            device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            progress=not args.no_progress,
        )
    except (DataError, PromptTooLongError, ValueError, OSError) as exc:
        return error(COMMAND, str(exc))

    report_summary(summary, args.summary_json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
