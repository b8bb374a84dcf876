"""`sgpo library`: build a strategy library from extraction outputs, and retrieve strategies from it."""

from __future__ import annotations

import argparse
import sys

from sgpo.data import FILE_SUFFIXES, ColumnMap, DataError
from sgpo.evaluation.options import add_prompt_arguments, prompt_format_from_args
from sgpo.library import BuildConfig, RerankConfig, RetrievalConfig, StrategyLibrary
from sgpo.prompts import PromptTooLongError
from sgpo.strategies.leak import LeakConfig
from sgpo.strategies.run_progress import report_summary

EPILOG = """examples:
  sgpo library build --input strategies.jsonl more-strategies.jsonl --output runs/lib
  sgpo library retrieve --library runs/lib --input train.jsonl --output train-filled.jsonl --only-missing
  sgpo library retrieve --library runs/lib --input train.jsonl --output out.jsonl --only-missing \\
      --k 4 --rerank-model runs/demo/warmup --rerank-k 8

A library is a folder of plain files (manifest.json, entries.jsonl, index.jsonl): docs/strategy-library.md.
"""


def _columns(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input columns")
    g.add_argument("--problem-column", default="problem", help="column with the problem (default: problem)")
    g.add_argument("--answer-column", default="answer", help="column with the gold answer (default: answer)")
    g.add_argument("--strategy-column", default="strategy", help="column with the rendered strategy (default: strategy)")
    g.add_argument("--id-column", default="id", help="column with the problem id (default: id)")


def _add_build_parser(sub) -> None:
    b = sub.add_parser(
        "build",
        help="build a library from extraction outputs (status ok rows), merging near-duplicates",
        description="Build a strategy library from `sgpo extract` / `sgpo score-strategies` outputs.",
    )
    b.add_argument(
        "--input", nargs="+", required=True, help="extraction output files (.jsonl / .json / .parquet) or data set folders"
    )
    b.add_argument("--output", required=True, help="the library folder to write")
    b.add_argument(
        "--merge-threshold",
        type=float,
        default=0.9,
        help="TF-IDF cosine between rendered strategies at or above which they are one entry (default: 0.9; > 1: only identical texts)",
    )
    b.add_argument(
        "--skip-invalid",
        action="store_true",
        help="build without rows that fail the checks (they are listed) instead of refusing",
    )
    b.add_argument("--overwrite", action="store_true", help="replace an existing library folder")
    b.add_argument(
        "--strategy-json-column", default="strategy_json", help="column with the strategy as JSON (default: strategy_json)"
    )
    b.add_argument(
        "--score-column", default="strategy_score", help="column with the score-strategies score (default: strategy_score)"
    )
    b.add_argument("--summary-json", default=None, help="also write the build summary to this JSON file")
    _columns(b)


def _add_retrieve_parser(sub) -> None:
    r = sub.add_parser(
        "retrieve",
        help="fill the strategy of problems from the most similar library problems",
        description="Retrieve strategies for problems from a library (TF-IDF cosine between problems), "
        "leak-filtered against each problem's gold answer, optionally re-ranked by a policy.",
    )
    r.add_argument("--library", required=True, help="a library folder written by `sgpo library build`")
    r.add_argument(
        "--input",
        required=True,
        help="problems (.jsonl / .json / .parquet / data set) with problem, answer, optional strategy and id",
    )
    r.add_argument(
        "--output", required=True, help="the input rows with strategy, strategy_source, ... (.jsonl / .json / .parquet)"
    )
    r.add_argument(
        "--k",
        type=int,
        default=3,
        help="clean candidates gathered per problem; the first (or the best re-ranked) is used (default: 3)",
    )
    r.add_argument(
        "--only-missing",
        action="store_true",
        help="retrieve only for rows without a strategy; rows with one keep it (strategy_source=own). "
        "Without it every row gets a retrieved strategy and its own moves to own_strategy",
    )
    r.add_argument(
        "--min-similarity",
        type=float,
        default=0.2,
        help="TF-IDF cosine below which a library problem is not similar (default: 0.2)",
    )
    r.add_argument(
        "--max-problem-numbers",
        type=int,
        default=None,
        help="also reject candidates that copy more than N distinct numbers of the target problem (default: off)",
    )
    r.add_argument("--summary-json", default=None, help="also write the summary to this JSON file")
    r.add_argument("--no-progress", action="store_true", help="no progress bar while re-ranking")
    _columns(r)
    rr = r.add_argument_group("re-ranking by usefulness (guided - autonomous accuracy of a policy, as score-strategies)")
    rr.add_argument("--rerank-model", default=None, help="the policy (folder or hub id); off when not given")
    rr.add_argument("--rerank-k", type=int, default=8, help="rollouts per prompt, guided and autonomous each (default: 8)")
    rr.add_argument("--rerank-max-new-tokens", type=int, default=512, help="completion length limit (default: 512)")
    rr.add_argument("--rerank-temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy (default: 1.0)")
    rr.add_argument("--rerank-seed", type=int, default=0, help="sampling seed (default: 0)")
    rr.add_argument("--rerank-cache", default=None, help="rollout cache for resuming (default: OUTPUT.rerank.cache.sqlite)")
    rr.add_argument("--device", default=None, help="device of the policy (default: cuda if available, else cpu)")
    add_prompt_arguments(r)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sgpo library", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="{build,retrieve}")

    _add_build_parser(sub)
    _add_retrieve_parser(sub)
    return p


def _column_map(args):
    return ColumnMap(problem=args.problem_column, answer=args.answer_column, strategy=args.strategy_column, id=args.id_column)


def _build(args) -> int:
    config = BuildConfig(
        merge_threshold=args.merge_threshold,
        skip_invalid=args.skip_invalid,
        columns=_column_map(args),
        strategy_json_column=args.strategy_json_column,
        score_column=args.score_column,
    )
    library, summary = StrategyLibrary.build(args.input, config)
    for line in summary.invalid:
        print(f"skipped invalid row: {line}", file=sys.stderr)
    library.save(args.output, overwrite=args.overwrite)
    summary.output = args.output
    return _report(summary, args.summary_json)


def _retrieve(args) -> int:
    from argparse import Namespace
    from pathlib import Path

    if Path(args.output).suffix.lower() not in FILE_SUFFIXES:
        raise DataError(f"{args.output}: output must end in {', '.join(FILE_SUFFIXES)}")
    config = RetrievalConfig(
        k=args.k,
        min_similarity=args.min_similarity,
        only_missing=args.only_missing,
        columns=_column_map(args),
        leak=LeakConfig(max_problem_numbers=args.max_problem_numbers),
    )
    library = StrategyLibrary.load(args.library)
    rerank = None
    if args.rerank_model is not None:
        import torch

        fmt, origin = prompt_format_from_args(Namespace(**{**vars(args), "model": args.rerank_model}))
        print(f"re-ranking with {args.rerank_model} (prompt format: {origin})", file=sys.stderr)
        rerank = RerankConfig(
            model=args.rerank_model,
            rollouts=args.rerank_k,
            max_new_tokens=args.rerank_max_new_tokens,
            temperature=args.rerank_temperature,
            seed=args.rerank_seed,
            prompt_format=fmt,
            device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            cache=args.rerank_cache or f"{args.output}.rerank.cache.sqlite",
        )
    summary = library.retrieve_file(args.input, args.output, config, rerank, progress=not args.no_progress)
    return _report(summary, args.summary_json)


def _report(summary, summary_json: str | None) -> int:
    report_summary(summary, summary_json)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "retrieve":
        for name in ("k", "rerank_k", "rerank_max_new_tokens"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if not 0.0 <= args.min_similarity <= 1.0:
            parser.error(f"--min-similarity must be in [0, 1], got {args.min_similarity}")
    elif args.merge_threshold <= 0:
        parser.error(f"--merge-threshold must be > 0, got {args.merge_threshold}")

    try:
        return _build(args) if args.action == "build" else _retrieve(args)
    except (DataError, PromptTooLongError, ValueError, OSError) as exc:
        print(f"sgpo library {args.action}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
