"""Peak memory and time of the distillation KL, forward + backward: plain reference vs chunked.

    python benchmarks/kl_memory.py                       # V = 151,936, H = 896, T in {512, 2048}
    python benchmarks/kl_memory.py --T 256 --vocab 32000 # smaller, quicker

For each T, the reference (`sgpo.objectives.lm_head.distill_terms`: full N × V logits) and the
chunked kernel (`sgpo.kernels.distill_terms`) each run in their OWN fresh subprocess, so one case's
freed-but-retained memory cannot hide or inflate the other's peak. The parent prints one JSON line
per T:

    {"T": …, "ref_peak_mb": …, "chunked_peak_mb": …, "mem_ratio": …, "ref_s": …, "chunked_s": …, "time_ratio": …}

with ratios = chunked / reference (a run description goes to stderr).

What is measured, in each subprocess (CPU):
- Inputs as the trainer has them: student hidden states (T, H) requiring grad, teacher hidden
  states (T, H), the LM-head weight (V, H) requiring grad (the teacher uses the same head), targets,
  float32. The loss is Σ_t w_t · KL_t with per-position weights w_t > 0 that differ between
  positions, as the trainer's instance weights / token-count normaliser make them (a uniform
  weight would let a kernel finish the weight gradient in the forward pass; the trainer never
  gives one). No weight is zero, so the chunked kernel's skipping of masked tokens does not help it.
- One warm-up at 16 positions first (thread pools, allocator, library initialisation), then one
  measured forward + backward.
- Memory: the kernel's resident-set high-water mark (VmHWM in /proc/self/status), reset to the
  current RSS just before the measured forward + backward by writing 5 to /proc/self/clear_refs
  (Linux ≥ 4.0). Peak above the inputs = VmHWM − VmRSS(before) − bytes of the weight gradient
  (V·H·4, which both paths must produce and keep). RSS sees every torch CPU allocation (tracemalloc
  does not), and the kernel-tracked high-water mark cannot miss a short spike the way sampling
  can. Where clear_refs cannot be written, a background thread samples /proc/self/statm every
  millisecond instead (the line on stderr says which method ran).
- Repeats: `--repeats` rounds, each running a fresh reference process then a fresh chunked one, so
  both see the same background load; reported: the minimum wall-clock time and the largest peak
  of each over the rounds (process CPU time goes to stderr as a cross-check on a busy machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if SRC.is_dir():  # run from a clone without installing: use this checkout's sgpo
    sys.path.insert(0, str(SRC))

PAGE = os.sysconf("SC_PAGE_SIZE")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Peak resident set size during a `with` block, in bytes above the RSS at entry."""

    def __init__(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM after clear_refs"
        except OSError:
            self.method = "statm sampled every 1 ms"

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.start = _rss_bytes()
        self.peak = self.start
        if self.method.startswith("VmHWM"):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # high-water mark := current RSS
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.method.startswith("VmHWM"):
            self.peak = _status_kb("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())

    @property
    def above_start(self) -> int:
        return self.peak - self.start


def worker(args: argparse.Namespace) -> None:
    """One case in this process; prints {"peak_mb", "seconds", "method"} as JSON."""
    import torch

    from sgpo import kernels
    from sgpo.objectives import lm_head

    torch.manual_seed(0)
    T, H, V = args.T, args.hidden, args.vocab
    # allocated in place (no temporaries that would raise the high-water mark before we measure)
    student = torch.empty(T, H).normal_().requires_grad_()
    teacher = torch.empty(T, H).normal_()
    weight = torch.empty(V, H).normal_(std=0.02).requires_grad_()
    targets = torch.randint(0, V, (T,))
    pos_w = torch.empty(T).uniform_(0.5, 1.5) / T  # per-position loss weights, all non-zero, all different
    if args.impl == "reference":
        fn = lm_head.distill_terms
    else:

        def fn(*a, **k):
            return kernels.distill_terms(*a, chunk_size=args.chunk_size, **k)

    def step(n: int) -> None:
        out = fn(student[:n], teacher[:n], weight, targets[:n], kind=args.kind, topk=args.topk)
        (out.divergence * pos_w[:n]).sum().backward()

    step(16)  # warm-up
    student.grad = weight.grad = None
    meter = PeakRSS()
    with meter:
        t0, c0 = time.perf_counter(), time.process_time()
        step(T)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    grad_bytes = weight.grad.numel() * weight.grad.element_size()
    peak = (meter.above_start - grad_bytes) / 2**20
    print(json.dumps({"peak_mb": round(peak, 1), "seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "method": meter.method}))


def run_case(args: argparse.Namespace, impl: str, T: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--T", str(T)]
    cmd += ["--vocab", str(args.vocab), "--hidden", str(args.hidden), "--kind", args.kind]
    if args.topk:
        cmd += ["--topk", str(args.topk)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{impl} at T={T} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[512, 2048], help="numbers of token positions N (default: 512 2048)")
    p.add_argument("--vocab", type=int, default=151_936, help="vocabulary size V (default: Qwen2.5's 151,936)")
    p.add_argument("--hidden", type=int, default=896, help="hidden size H (default: Qwen2.5-0.5B's 896)")
    p.add_argument("--kind", default="forward_kl", choices=["forward_kl", "reverse_kl"], help="divergence (default: forward_kl)")
    p.add_argument("--topk", type=int, default=None, help="top-k + tail bucket instead of the full vocabulary (forward_kl)")
    p.add_argument("--chunk-size", type=int, default=None, help="positions per chunk for the chunked kernel (default: its own)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of (reference, chunked) fresh processes; min time and max peak reported (default: 2)")
    p.add_argument("--worker", choices=["reference", "chunked"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.impl = args.worker
        args.T = args.T[0]
        worker(args)
        return 0
    import torch

    from sgpo.kernels import default_chunk_size

    chunk = args.chunk_size or default_chunk_size(args.vocab)
    print(
        f"# V={args.vocab} H={args.hidden} kind={args.kind} topk={args.topk} chunk_size={chunk} float32 CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; each case in its own process",
        file=sys.stderr,
    )
    for T in args.T:
        refs, chks = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same background load
            refs.append(run_case(args, "reference", T))
            chks.append(run_case(args, "chunked", T))
        ref = {"peak_mb": max(r["peak_mb"] for r in refs), "seconds": min(r["seconds"] for r in refs)}
        chk = {"peak_mb": max(r["peak_mb"] for r in chks), "seconds": min(r["seconds"] for r in chks)}
        print(
            f"# T={T}: memory by {refs[0]['method']}; wall s ref {[r['seconds'] for r in refs]} "
            f"chunked {[r['seconds'] for r in chks]}; cpu s ref {[r['cpu_s'] for r in refs]} "
            f"chunked {[r['cpu_s'] for r in chks]}; peak MB ref {[r['peak_mb'] for r in refs]} "
            f"chunked {[r['peak_mb'] for r in chks]}",
            file=sys.stderr,
        )
        row = {
            "T": T,
            "ref_peak_mb": ref["peak_mb"],
            "chunked_peak_mb": chk["peak_mb"],
            "mem_ratio": round(chk["peak_mb"] / ref["peak_mb"], 4),
            "ref_s": ref["seconds"],
            "chunked_s": chk["seconds"],
            "time_ratio": round(chk["seconds"] / ref["seconds"], 4),
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
