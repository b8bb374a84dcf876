"""`sgpo eval`: evaluate a model on math benchmarks (avg@k, pass@k, greedy accuracy, 95% intervals).

    sgpo eval --model runs/demo/sgpo --benchmark math500,aime24 --data-dir data/ --k 4

Writes OUT/results.json, OUT/results.md and OUT/samples/NAME.jsonl (see `sgpo.evaluation.suite`);
OUT defaults to MODEL/eval/TAG for a model folder, where `sgpo report MODEL` shows it.
"""

from __future__ import annotations

import argparse
import sys

from sgpo.commands.common import check_model, error, parse_args
from sgpo.data import DataError
from sgpo.evaluation.benchmarks import BENCHMARKS, load_benchmarks
from sgpo.evaluation.harness import EvalConfig, make_generator
from sgpo.evaluation.options import (
    add_column_arguments,
    add_model_arguments,
    add_prompt_arguments,
    columns_from_args,
    prompt_format_from_args,
)
from sgpo.evaluation.suite import default_out_dir, markdown_table, run_suite
from sgpo.sampling import SamplingConfig
from sgpo.verify import Verifier

COMMAND = "eval"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sgpo eval",
        description="Evaluate a model on math benchmarks: k samples per problem, answers checked with "
        "math-verify; avg@k, unbiased pass@k, greedy accuracy and 95% intervals, per benchmark and averaged. "
        "Options may be written with dashes or underscores (--max-new-tokens, --max_new_tokens).",
    )
    add_model_arguments(p)
    p.add_argument(
        "--benchmark",
        "--input",
        "--data",
        dest="benchmark",
        required=True,
        metavar="NAME|FILE[,...]",
        help=f"comma-separated benchmarks: registry names ({', '.join(BENCHMARKS)}), JSONL/JSON/parquet "
        "files with problem and answer columns (e.g. a strategy-world split), or LABEL=FILE",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with local copies of registry benchmarks (NAME.jsonl, .json, .parquet, "
        "NAME/test.jsonl or .parquet, or a save_to_disk folder NAME/); no network is used for them then",
    )
    p.add_argument("--k", type=int, default=1, help="samples per problem (default 1)")
    p.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature; 0 = greedy (default: 0 when k = 1, else 0.6)"
    )
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling top-p (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="completion token limit (default 512)")
    p.add_argument(
        "--greedy",
        action="store_true",
        help="when sampling (temperature > 0), also decode each problem greedily once and report greedy accuracy next to avg@k",
    )
    p.add_argument(
        "--guided", action="store_true", help="put each problem's strategy (column 'strategy') in the prompt: guided accuracy"
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N problems of each benchmark")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per generate call for the HF backend (default 64)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "hf", "vllm"],
        help="generation backend (default auto: vLLM when installed and a GPU is present, else HF generate)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds allowed to check one answer (default 5)")
    p.add_argument("--workers", type=int, default=None, help="answer-checking processes (default: min(4, CPUs))")
    p.add_argument(
        "--out",
        "--output",
        dest="out",
        default=None,
        help="output folder (default: MODEL/eval/TAG for a model folder, where `sgpo report MODEL` finds "
        "it, else eval/ORG__NAME/TAG; TAG names the benchmarks and the mode, e.g. math500+aime24-k8-t0.6)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="evaluate everything again instead of reading back benchmarks this model finished with the same settings",
    )
    add_prompt_arguments(p)
    add_column_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.k < 1 or args.max_new_tokens < 1 or (args.limit is not None and args.limit < 1):
        return error(COMMAND, "--k, --max-new-tokens and --limit must be >= 1")
    temperature = args.temperature if args.temperature is not None else (0.0 if args.k == 1 else 0.6)
    if temperature == 0 and args.k > 1:
        return error(
            COMMAND,
            f"--k {args.k} with temperature 0 samples the same greedy completion {args.k} times; "
            "give --temperature > 0 (or --k 1)",
        )
    from pathlib import Path

    def say(msg: str) -> None:
        print(f"[sgpo eval] {msg}", file=sys.stderr, flush=True)

    try:
        sampling = SamplingConfig(
            k=args.k, temperature=temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
        )
        fmt, origin = prompt_format_from_args(args)
        benches = load_benchmarks(args.benchmark, args.data_dir, args.limit, columns_from_args(args))
    except (DataError, ValueError) as exc:
        return error(COMMAND, str(exc), 1)
    if (code := check_model(COMMAND, args.model)) is not None:
        return code
    config = EvalConfig(sampling, guided=args.guided, prompt_format=fmt, batch_size=args.batch_size, backend=args.backend)
    out = Path(args.out) if args.out else default_out_dir(args.model, benches, config)
    say(f"prompt format: {origin}; benchmarks: " + ", ".join(f"{b.name} ({len(b)})" for b in benches))
    say(f"k={args.k} temperature={temperature} top_p={args.top_p} max_new_tokens={args.max_new_tokens} seed={args.seed}")
    try:
        gen = make_generator(args.model, backend=args.backend, batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    except (RuntimeError, OSError, ValueError) as exc:
        return error(COMMAND, f"cannot load {args.model}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", 1)
    say(f"generation backend: {gen.name}")
    try:
        with Verifier(num_workers=args.workers, timeout=args.timeout) as verifier:
            doc = run_suite(
                gen,
                benches,
                out,
                config,
                model=str(args.model),
                verifier=verifier,
                greedy=args.greedy,
                overwrite=args.overwrite,
                progress=say,
            )
    except DataError as exc:
        return error(COMMAND, str(exc), 1)
    finally:
        if hasattr(gen, "close"):  # an in-process vLLM engine: free it for whatever runs next
            gen.close()
    print(markdown_table(doc), end="")
    say(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'samples'}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
