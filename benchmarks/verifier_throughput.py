"""Answer-checking throughput: answers/s with the worker pool and in-process, on a realistic mix.

    python benchmarks/verifier_throughput.py [--n 2000] [--workers W] [--timeout 5] [--seed 0]

Prints one JSON line. The mix resembles model answers on MATH-style benchmarks: about half are
integers (settled without the parser), the rest LaTeX written in another notation than the gold
answer (fractions vs decimals, surds, sets, intervals, polynomials, degrees, choices), a quarter of
them wrong. Every answer string is distinct, so math-verify's parse caches do not flatter the figure.
Wall-clock rates depend on what else runs on the machine; answers per CPU-second do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

from sgpo.verify import Verifier, quick_verdict


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc; None elsewhere)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def total_cpu(pids) -> float | None:
    vals = [process_cpu_s(p) for p in pids]
    return None if any(v is None for v in vals) else sum(vals)


def answer_mix(n: int, seed: int, number_seed: int = 0) -> list[tuple[str, str]]:
    """`n` (prediction, gold) pairs; `seed` fixes the kinds of answer, `number_seed` the numbers in
    them (so two mixes of the same kinds share no string)."""
    rnd, num = random.Random(seed), random.Random(1_000_003 * number_seed + seed)
    out: list[tuple[str, str]] = []
    for i in range(n):
        a, b = num.randint(1, 999), num.choice([2, 4, 5, 8, 10, 20, 25, 40])
        m, s = num.randint(2, 9), num.choice([2, 3, 5, 6, 7])
        kind = rnd.random()
        if kind < 0.40:
            out.append((str(a), str(a)))  # integer, right
        elif kind < 0.50:
            out.append((str(a), str(a + 1)))  # integer, wrong
        else:
            pair = rnd.choice(
                [
                    (f"{a / b:g}", f"\\frac{{{a}}}{{{b}}}"),
                    (f"\\dfrac{{{a}}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}"),
                    (f"{a}/{b}", f"\\frac{{{a}}}{{{b}}}"),
                    (f"\\sqrt{{{m * m * s}}}", f"{m}\\sqrt{{{s}}}"),
                    (f"x^2+{2 * m}x+{m * m}", f"(x+{m})^2"),
                    (f"\\{{{a}, {a + m}\\}}", f"\\{{{a + m},{a}\\}}"),
                    (f"{a % 180}^\\circ", f"{a % 180}"),
                    (f"x = {a}", f"{a}"),
                    (f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}\\pi"),
                    (f"[{a}, {a + m})", f"[{a},{a + m}]"),  # wrong: interval ends
                    (f"\\frac{{{a + 1}}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}"),  # wrong
                    (f"{m}\\sqrt{{{s + 1}}}", f"{m}\\sqrt{{{s}}}"),  # wrong
                    (f"\\text{{({'ABCDE'[i % 5]})}}", "ABCDE"[i % 5]),
                ]
            )
            out.append(pair)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="answers to check (default 2000)")
    p.add_argument("--workers", type=int, default=None, help="pool processes (default: min(4, CPUs))")
    p.add_argument("--timeout", type=float, default=5.0, help="per-answer timeout in seconds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the answer mix (default 0)")
    args = p.parse_args()

    pairs = answer_mix(args.n, args.seed)
    preds, golds = [x for x, _ in pairs], [g for _, g in pairs]
    quick = sum(quick_verdict(x, g) is not None for x, g in pairs)

    with Verifier(num_workers=args.workers, timeout=args.timeout) as pool:
        t0 = time.perf_counter()
        warm = [f"\\frac{{1}}{{{i + 3}}}" for i in range(2 * pool.num_workers)]
        pool.check_answers(warm, ["0.5"] * len(warm))  # start and warm every worker
        startup = time.perf_counter() - t0
        pids = [w.proc.pid for w in pool._workers]
        cpu0, t0 = total_cpu(pids), time.perf_counter()
        pool_checks = pool.check_answers(preds, golds)
        pool_s = time.perf_counter() - t0
        cpu1 = total_cpu(pids) if all(w.proc.pid in pids for w in pool._workers) else None
        pool_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        workers = pool.num_workers

    # in-process on the same kinds of answer with other numbers (math-verify caches parses)
    pairs2 = answer_mix(args.n, args.seed, number_seed=1)
    inproc = Verifier(num_workers=0, timeout=args.timeout)
    inproc.check_answers(["\\frac{1}{3}"], ["0.5"])
    c0, t0 = time.process_time(), time.perf_counter()
    inproc_checks = inproc.check_answers([x for x, _ in pairs2], [g for _, g in pairs2])
    inproc_s, inproc_cpu = time.perf_counter() - t0, time.process_time() - c0

    print(
        json.dumps(
            {
                "benchmark": "verifier_throughput",
                "answers": args.n,
                "quick_path_share": round(quick / args.n, 3),
                "correct_share": round(sum(c.correct for c in pool_checks) / args.n, 3),
                "pool_workers": workers,
                "pool_startup_s": round(startup, 2),
                "pool_answers_per_s": round(args.n / pool_s, 1),
                "pool_answers_per_worker_cpu_s": round(args.n / pool_cpu, 1) if pool_cpu else None,
                "pool_timeouts": sum(c.timed_out for c in pool_checks),
                "in_process_answers_per_s": round(args.n / inproc_s, 1),
                "in_process_answers_per_cpu_s": round(args.n / inproc_cpu, 1),
                "in_process_timeouts": sum(c.timed_out for c in inproc_checks),
                "timeout_s": args.timeout,
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
