"""`sgpo report RUN_DIR`: one HTML page (plus PNG figures) for a training run."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sgpo report",
        description="Render RUN_DIR/metrics.jsonl and any eval results.json under RUN_DIR into "
        "RUN_DIR/report/index.html with PNG figures.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="training output folder (holds metrics.jsonl)")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    from sgpo.evaluation.report import render_report

    try:
        index = render_report(args.run_dir, args.out)
    except FileNotFoundError as exc:
        print(f"[sgpo report] error: {exc}", file=sys.stderr)
        return 1
    print(index)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
