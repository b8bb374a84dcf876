"""Peak memory and time of the distillation KL, forward + backward: plain reference vs chunked.

    python benchmarks/kl_memory.py                       # V = 151,936, H = 896, T in {512, 2048}
    python benchmarks/kl_memory.py --T 256 --vocab 32000 # smaller, quicker

For each T, the reference (`sgpo.objectives.lm_head.distill_terms`: full N × V logits) and the
chunked kernel (`sgpo.objectives.chunked_head.distill_terms`) each run in their OWN fresh subprocess, so one case's
freed-but-retained memory cannot hide or inflate the other's peak. The parent prints one JSON line
per T:

    {"T": …, "ref_peak_mb": …, "chunked_peak_mb": …, "mem_ratio": …, "ref_s": …, "chunked_s": …, "time_ratio": …,
     "cpu_time_ratio": …, "fused_peak_mb": …, "fused_mem_ratio": …, "fused_s": …, "fused_time_ratio": …,
     "fused_cpu_time_ratio": …}

with ratios = chunked / reference (a run description goes to stderr). "chunked" is the plain
drop-in call; "fused" is the same kernel told the loss weights in advance (`loss_weights=`, which the
trainer can always do, with a callable for the proximal mask), so the LM head's gradient is finished
in the forward pass and backward recomputes nothing (`--no-fused` skips this third process).

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
  current RSS just before the forward pass and again between forward and backward by writing 5 to
  /proc/self/clear_refs (Linux ≥ 4.0), so each phase has its own peak. Peak above the inputs =
  max over the two phases of VmHWM − VmRSS(before the forward pass) − the bytes of the weight
  gradient (V·H·4, which every path must produce and keep) while that buffer exists: in backward,
  and for "fused", which accumulates it during the forward pass, from the forward pass on. RSS
  sees every torch CPU allocation (tracemalloc does not), and the kernel-tracked high-water mark
  cannot miss a short spike the way sampling can. The workers run with
  MALLOC_MMAP_THRESHOLD_=65536, so glibc maps every block of 64 KiB or more and returns it on free:
  memory freed earlier (the warm-up) cannot sit in the baseline and be reused unseen, and RSS
  follows the live tensors. Where clear_refs cannot be written, a background thread samples
  /proc/self/statm every millisecond instead (the line on stderr says which method ran).
- Repeats: `--repeats` rounds, each running fresh reference, chunked and fused processes in turn,
  so all see similar background load; reported: the minimum wall-clock time and the largest peak
  of each over the rounds. On a shared machine the cores a process gets can change from one
  process to the next, so the line also carries `cpu_time_ratio` / `fused_cpu_time_ratio`, the
  ratios of the minimum process CPU times (the work done, whichever cores did it); stderr lists
  every run.
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
    """Peak resident set size per phase, in bytes above the RSS at `start()`."""

    def __init__(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM after clear_refs"
        except OSError:
            self.method = "statm sampled every 1 ms"

    def _reset(self) -> None:
        if self.method.startswith("VmHWM"):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # high-water mark := current RSS
        self.peak = _rss_bytes()

    def start(self) -> None:
        gc.collect()
        self.base = _rss_bytes()
        self._reset()
        if not self.method.startswith("VmHWM"):
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def lap(self) -> int:
        """Peak since start() or the previous lap, above the RSS at start(); then a new lap begins."""
        if self.method.startswith("VmHWM"):
            peak = _status_kb("VmHWM") * 1024
        else:
            peak = max(self.peak, _rss_bytes())
        self._reset()
        return peak - self.base

    def stop(self) -> None:
        if not self.method.startswith("VmHWM"):
            self._stop.set()
            self._thread.join()


def worker(args: argparse.Namespace) -> None:
    """One case in this process; prints {"peak_mb", "seconds", "method"} as JSON."""
    import torch

    from sgpo.objectives import chunked_head as kernels
    from sgpo.objectives import lm_head

    torch.manual_seed(0)
    T, H, V = args.T, args.hidden, args.vocab
    # allocated in place (no temporaries that would raise the high-water mark before we measure)
    student = torch.empty(T, H).normal_().requires_grad_()
    teacher = torch.empty(T, H).normal_()
    weight = torch.empty(V, H).normal_(std=0.02).requires_grad_()
    targets = torch.randint(0, V, (T,))
    pos_w = torch.empty(T).uniform_(0.5, 1.5) / T  # per-position loss weights, all non-zero, all different

    def forward(n: int):
        if args.impl == "reference":
            return lm_head.distill_terms(student[:n], teacher[:n], weight, targets[:n], kind=args.kind, topk=args.topk)
        hint = pos_w[:n] if args.impl == "fused" else None
        return kernels.distill_terms(
            student[:n], teacher[:n], weight, targets[:n], kind=args.kind, topk=args.topk,
            chunk_size=args.chunk_size, loss_weights=hint,
        )  # fmt: skip

    (forward(16).divergence * pos_w[:16]).sum().backward()  # warm-up
    student.grad = weight.grad = None
    meter = PeakRSS()
    meter.start()
    t0, c0 = time.perf_counter(), time.process_time()
    out = forward(T)
    fwd_peak = meter.lap()
    (out.divergence * pos_w).sum().backward()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    bwd_peak = meter.lap()
    meter.stop()
    grad_bytes = weight.grad.numel() * weight.grad.element_size()
    # the weight gradient's bytes are allowed while its buffer exists: in backward, and for "fused"
    # (which accumulates it during the forward pass) from the forward pass on
    fwd_mb = (fwd_peak - (grad_bytes if args.impl == "fused" else 0)) / 2**20
    bwd_mb = (bwd_peak - grad_bytes) / 2**20
    print(json.dumps({
        "peak_mb": round(max(fwd_mb, bwd_mb), 1), "fwd_mb": round(fwd_mb, 1), "bwd_mb": round(bwd_mb, 1),
        "seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "method": meter.method,
    }))  # fmt: skip


def run_case(args: argparse.Namespace, impl: str, T: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--T", str(T)]
    cmd += ["--vocab", str(args.vocab), "--hidden", str(args.hidden), "--kind", args.kind]
    if args.topk:
        cmd += ["--topk", str(args.topk)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    # glibc serves blocks below its (dynamic, up to 32 MB) mmap threshold from a heap it keeps after
    # free; memory kept from the warm-up would sit in the RSS baseline and be reused unseen. A fixed
    # 64 KiB threshold maps every large block and unmaps it on free, so RSS follows live tensors.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
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
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="rounds of fresh (reference, chunked, fused) processes; min time and max peak reported (default: 2)",
    )
    p.add_argument(
        "--no-fused", dest="fused", action="store_false", help="skip the third case, chunked with the loss_weights hint"
    )
    p.add_argument("--worker", choices=["reference", "chunked", "fused"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.impl = args.worker
        args.T = args.T[0]
        worker(args)
        return 0
    import torch

    from sgpo.objectives.chunked_head import default_chunk_size

    chunk = args.chunk_size or default_chunk_size(args.vocab)
    print(
        f"# V={args.vocab} H={args.hidden} kind={args.kind} topk={args.topk} chunk_size={chunk} float32 CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; each case in its own process",
        file=sys.stderr,
    )
    for T in args.T:
        impls = ["reference", "chunked"] + (["fused"] if args.fused else [])
        runs: dict[str, list[dict]] = {impl: [] for impl in impls}
        for _ in range(args.repeats):  # interleaved, so all see the same background load
            for impl in impls:
                runs[impl].append(run_case(args, impl, T))
        best = {
            impl: {
                "peak_mb": max(r["peak_mb"] for r in rs),
                "seconds": min(r["seconds"] for r in rs),
                "cpu_s": min(r["cpu_s"] for r in rs),
            }
            for impl, rs in runs.items()
        }
        detail = "; ".join(
            f"{impl}: wall s {[r['seconds'] for r in rs]}, cpu s {[r['cpu_s'] for r in rs]}, "
            f"peak MB forward {[r['fwd_mb'] for r in rs]} backward {[r['bwd_mb'] for r in rs]}"
            for impl, rs in runs.items()
        )
        print(f"# T={T}, memory by {runs['reference'][0]['method']}: {detail}", file=sys.stderr)
        ref, chk = best["reference"], best["chunked"]
        row = {
            "T": T,
            "ref_peak_mb": ref["peak_mb"],
            "chunked_peak_mb": chk["peak_mb"],
            "mem_ratio": round(chk["peak_mb"] / ref["peak_mb"], 4),
            "ref_s": ref["seconds"],
            "chunked_s": chk["seconds"],
            "time_ratio": round(chk["seconds"] / ref["seconds"], 4),
            "cpu_time_ratio": round(chk["cpu_s"] / ref["cpu_s"], 4),
        }
        if args.fused:
            fus = best["fused"]
            row.update(
                fused_peak_mb=fus["peak_mb"],
                fused_mem_ratio=round(fus["peak_mb"] / ref["peak_mb"], 4),
                fused_s=fus["seconds"],
                fused_time_ratio=round(fus["seconds"] / ref["seconds"], 4),
                fused_cpu_time_ratio=round(fus["cpu_s"] / ref["cpu_s"], 4),
            )
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
