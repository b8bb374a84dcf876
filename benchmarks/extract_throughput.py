"""Extraction throughput against the scripted OpenAI-compatible server (fixed latency per request).

Measures the whole pipeline (openai client, retries wrapper, parsing, leak filter, fsynced SQLite
result cache, output file) with the endpoint's own speed taken out: the server, a separate process,
answers every request with a valid strategy after `--latency` seconds. The ideal is
`concurrency / latency` items/s; the gap is our overhead. One JSON line per concurrency level.

    python benchmarks/extract_throughput.py --latency 0.05 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per request (default: 0.05)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels (default: 1 8 32)")
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="approximate ideal duration of each case; sets the item count (default: 4)"
    )
    parser.add_argument("--min-items", type=int, default=40, help="at least this many items per case (default: 40)")
    args = parser.parse_args(argv)

    from sgpo.strategies.extraction import ExtractionConfig, extract_strategies

    server = subprocess.Popen(
        [sys.executable, "-m", "sgpo.strategies.scripted_server", "--latency", str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError("the scripted server did not start")
        base_url = f"http://127.0.0.1:{line[1]}/v1"
        for conc in args.concurrency:
            n = max(args.min_items, int(args.seconds * conc / args.latency))
            with tempfile.TemporaryDirectory() as tmp:
                inp = Path(tmp) / "in.jsonl"
                inp.write_text(
                    "".join(
                        json.dumps(
                            {
                                "id": i,
                                "problem": f"Problem {i}: find the value.",
                                "response": f"Solution {i} ... \\boxed{{{i}}}",
                                "answer": str(i),
                            }
                        )
                        + "\n"
                        for i in range(n)
                    )
                )
                start = time.perf_counter()
                summary = extract_strategies(
                    inp,
                    Path(tmp) / "out.jsonl",
                    "openai",
                    ExtractionConfig(concurrency=conc),
                    extractor_options={"model": "scripted", "base_url": base_url, "timeout": 30.0},
                    progress=False,
                )
                wall = time.perf_counter() - start
            ideal = conc / args.latency
            print(
                json.dumps(
                    {
                        "bench": "extract_throughput",
                        "concurrency": conc,
                        "items": n,
                        "latency_s": args.latency,
                        "ok": summary.ok,
                        "wall_s": round(wall, 3),
                        "items_per_s": round(n / wall, 1),
                        "ideal_items_per_s": round(ideal, 1),
                        "efficiency": round(n / wall / ideal, 3),
                    }
                ),
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
