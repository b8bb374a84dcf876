"""`sgpo extract`: turn strong-model responses into validated, leak-checked strategies."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sgpo.commands.common import error, parse_args
from sgpo.data import DataError
from sgpo.strategies.base import ExtractorConfigError
from sgpo.strategies.extraction import ExtractionConfig, InputColumns, extract_strategies
from sgpo.strategies.leak import LeakConfig
from sgpo.strategies.registry import accepted_options, resolve_backend
from sgpo.strategies.run_progress import report_summary

EPILOG = """examples:
  # any OpenAI-compatible endpoint (vllm serve, transformers serve, SGLang, hosted APIs);
  # the API key, if the endpoint needs one, is read from $OPENAI_API_KEY (see --api-key-env)
  sgpo extract --input responses.jsonl --output strategies.jsonl \\
      --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-72B-Instruct --concurrency 32

  # the strategy world's rule-based extractor, selected by import path
  sgpo extract --input world.jsonl --output world-strategies.jsonl --backend sgpo.world.extractor:WorldExtractor

Reruns with the same output (or --cache) skip finished items; kill -9 loses only items in flight.
The endpoint is probed once before the first item: when nothing listens there the run stops at once.
The exit status is 1 when every item failed. Options may be written with dashes or underscores.
"""

COMMAND = "extract"


def _backend_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_io_options(p: argparse.ArgumentParser) -> None:
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--input",
        "--data",
        dest="input",
        required=True,
        help="a .jsonl/.json/.parquet file, a save_to_disk folder or a hub data set with `problem` and `response` (optional `answer`, `id`)",
    )
    io.add_argument(
        "--output", "--out", dest="output", required=True, help="output file, one row per input row (.jsonl or .parquet)"
    )
    io.add_argument("--cache", default=None, help="result cache (SQLite) that makes reruns resume (default: OUTPUT.cache.sqlite)")
    io.add_argument("--limit", type=int, default=None, help="only the first N input rows (a trial run)")
    io.add_argument("--problem-column", default="problem", help="input column with the problem (default: problem)")
    io.add_argument(
        "--response-column", default="response", help="input column with the strong-model response (default: response)"
    )
    io.add_argument("--answer-column", default="answer", help="input column with the gold answer, optional (default: answer)")
    io.add_argument("--id-column", default="id", help="input column with the row id, used in error messages (default: id)")
    io.add_argument("--summary-json", default=None, help="also write the run summary to this JSON file")


def _add_extractor_options(p: argparse.ArgumentParser) -> None:
    be = p.add_argument_group("extractor")
    be.add_argument(
        "--backend",
        default="openai",
        help="openai | transformers | vllm | world, or an import path package.module:Class (default: openai)",
    )
    be.add_argument(
        "--base-url",
        default=None,
        help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL or the OpenAI API)",
    )
    be.add_argument(
        "--model", default=None, help="model name at the endpoint, or a local path / hub id for the in-process backends"
    )
    be.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key; the key is never logged or written (default: OPENAI_API_KEY)",
    )
    be.add_argument("--prompt-version", default="v1", help="extraction prompt version (default: v1)")
    be.add_argument("--temperature", type=float, default=0.0, help="sampling temperature of the extractor model (default: 0)")
    be.add_argument(
        "--max-tokens",
        "--max-new-tokens",
        dest="max_tokens",
        type=int,
        default=2048,
        help="token limit of one extractor reply (default: 2048)",
    )
    be.add_argument(
        "--response-format",
        choices=["auto", "json_schema", "json_object", "none"],
        default="auto",
        help="structured-output mode to request; auto falls back when the endpoint rejects one (default: auto)",
    )
    be.add_argument(
        "--device", default=None, help="device of the in-process transformers backend (default: cuda if available, else cpu)"
    )
    be.add_argument(
        "--backend-arg",
        action="append",
        type=_backend_arg,
        default=[],
        metavar="KEY=VALUE",
        help="extra constructor argument of the backend (VALUE parsed as JSON when it is JSON); repeatable",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    run = p.add_argument_group("robustness and speed")
    run.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default: 8)")
    run.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="items per extractor call (in-process backends batch them; default: the backend's)",
    )
    run.add_argument(
        "--max-retries", type=int, default=5, help="retries of a request on 429 / 5xx / timeouts / connection errors (default: 5)"
    )
    run.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one reply (default: 120)")
    run.add_argument(
        "--retry-base",
        type=float,
        default=1.0,
        help="first backoff delay in seconds; doubles per retry, with jitter (default: 1)",
    )
    run.add_argument("--retry-cap", type=float, default=30.0, help="longest backoff delay in seconds (default: 30)")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="also redo items that failed for non-transient reasons (invalid JSON, ...) in an earlier run",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines")


def _add_leak_options(p: argparse.ArgumentParser) -> None:
    lk = p.add_argument_group("leak filter")
    lk.add_argument("--no-gold-check", action="store_true", help="do not reject strategies containing the gold answer")
    lk.add_argument(
        "--no-response-answer-check",
        action="store_true",
        help="do not reject strategies containing the response's final boxed answer",
    )
    lk.add_argument("--allow-boxed", action="store_true", help="do not reject strategies containing \\boxed{}")
    lk.add_argument(
        "--max-problem-numbers",
        type=int,
        default=None,
        help="reject strategies copying more than N distinct numbers of the problem (default: off)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sgpo extract",
        description="Extract structured strategies (schema v1) from strong-model responses.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_io_options(p)
    _add_extractor_options(p)
    _add_run_options(p)
    _add_leak_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    for name in ("concurrency", "max_tokens"):
        if getattr(args, name) < 1:
            return error(COMMAND, f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_retries < 0 or args.timeout <= 0:
        return error(COMMAND, "--max-retries must be >= 0 and --timeout > 0")

    # a wrong backend or --backend-arg is reported before the input is read or a model is loaded
    try:
        factory = resolve_backend(args.backend)
        unknown = sorted(set(dict(args.backend_arg)) - set(accepted_options(factory, dict(args.backend_arg))))
        if unknown:
            raise ExtractorConfigError(f"backend {args.backend!r} takes no option(s) {', '.join(unknown)}")
    except ExtractorConfigError as exc:
        return error(COMMAND, str(exc))

    options: dict[str, Any] = dict(
        model=args.model,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        prompt_version=args.prompt_version,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        response_format=args.response_format,
        timeout=args.timeout,
        max_retries=args.max_retries,
        retry_base=args.retry_base,
        retry_cap=args.retry_cap,
        device=args.device,
    )
    config = ExtractionConfig(
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        leak=LeakConfig(
            check_gold_answer=not args.no_gold_check,
            check_response_answer=not args.no_response_answer_check,
            reject_boxed=not args.allow_boxed,
            max_problem_numbers=args.max_problem_numbers,
        ),
        columns=InputColumns(args.problem_column, args.response_column, args.answer_column, args.id_column),
        retry_failed=args.retry_failed,
        limit=args.limit,
    )
    try:
        summary = extract_strategies(
            args.input,
            args.output,
            args.backend,
            config,
            extractor_options=options,
            strict_extractor_options=dict(args.backend_arg),
            cache=args.cache,
            progress=not args.no_progress,
        )
    except (DataError, ExtractorConfigError, ValueError) as exc:
        return error(COMMAND, str(exc))
    except KeyboardInterrupt:
        print("sgpo extract: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130

    report_summary(summary, args.summary_json)
    failed = sum(summary.failed.values())
    if summary.rows and failed == summary.rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.failed.items(), key=lambda kv: -kv[1]))
        return error(COMMAND, f"every item failed ({reasons}); nothing was extracted (see the output's detail column)", 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
