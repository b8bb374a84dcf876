"""`sgpo report RUN_DIR`: one HTML page (plus PNG figures) for a training run."""

from __future__ import annotations

import argparse
import sys

from sgpo.commands.common import error, parse_args
from sgpo.evaluation.report import render_report

COMMAND = "report"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sgpo report",
        description="Render RUN_DIR/metrics.jsonl, the run's settings (RUN_DIR/config.yaml) and any eval "
        "results.json under RUN_DIR (sgpo eval --model RUN_DIR writes there by default) into "
        "RUN_DIR/report/index.html with PNG figures.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="training output folder (holds metrics.jsonl)")
    p.add_argument("--out", "--output", dest="out", default=None, help="report folder (default: RUN_DIR/report)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    import matplotlib

    matplotlib.use("Agg")

    def warn(msg: str) -> None:
        print(f"sgpo report: warning: {msg}", file=sys.stderr, flush=True)

    try:
        index = render_report(args.run_dir, args.out, on_warning=warn)
    except FileNotFoundError as exc:
        return error(COMMAND, str(exc), 1)
    print(index)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
