"""What the demo's numbers depend on, bit for bit: 3 warm-up steps of the full-size world model and
one forward pass, hashed, under settings that differ between machines.

    python scripts/numerics_probe.py            # the matrix below, one fresh process per row
    python scripts/numerics_probe.py --one 2    # this process's environment with 2 torch threads

Rows: torch thread counts 1-4 (the default is the machine's core count), and the CPU code paths a
processor without AVX-512 takes (ATen's kernels: `ATEN_CPU_CAPABILITY`; MKL's matrix products:
`MKL_ENABLE_INSTRUCTIONS`), without and with MKL's reproducibility mode (`MKL_CBWR=AVX2`) and
ATen's AVX2 kernels, which make an AVX-512 machine compute what an AVX2 one computes. Prints one JSON
line per row: the hash of the weights after each step and of the logits; equal hashes, equal bits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys

ROWS = [
    ("1 thread", 1, {}),
    ("2 threads", 2, {}),
    ("3 threads", 3, {}),
    ("4 threads", 4, {}),
    ("1 thread, again", 1, {}),
    ("1 thread, ATen AVX2 kernels (an AVX2-only CPU)", 1, {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("1 thread, MKL AVX2 (an AVX2-only CPU)", 1, {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    ("1 thread, both (an AVX2-only CPU)", 1, {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    ("1 thread, pinned: MKL_CBWR=AVX2 + ATen AVX2", 1, {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}),
    (
        "1 thread, pinned, on an AVX2-only CPU",
        1,
        {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    ),
]


def probe(threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    from sgpo.prompts import tokenize_prompts
    from sgpo.rollout import pad
    from sgpo.sft import completion_nll
    from sgpo.world.extractor import fill_strategies
    from sgpo.world.generate import WorldSpec, build_world
    from sgpo.world.model import ModelSpec, build_model
    from sgpo.world.prompt import WORLD_PROMPT_FORMAT
    from sgpo.world.tokenizer import build_tokenizer, world_texts
    from sgpo.world.warmup import WarmupConfig, build_examples, step_batch

    world = {
        s: fill_strategies(rows)
        for s, rows in build_world(0, WorldSpec(per_family={"heldout": 10, "train": 1, "warmup": 100})).items()
    }
    tokenizer = build_tokenizer(world_texts(world["warmup"], WORLD_PROMPT_FORMAT), 640)
    model = build_model(tokenizer, ModelSpec(), seed=0)
    cfg = WarmupConfig()
    data = build_examples(world["warmup"], tokenizer, cfg.auto_exposure, swap_fraction=cfg.swap_fraction)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=True)

    def digest(tensors) -> str:
        return hashlib.sha256(b"".join(t.detach().contiguous().numpy().tobytes() for t in tensors)).hexdigest()[:12]

    model.train()
    weights = []
    for step in range(3):
        guided, auto = step_batch(data, cfg, step)
        opt.zero_grad(set_to_none=True)
        parts = [completion_nll(model, part, tokenizer.pad_token_id) for part in (guided, auto)]
        (sum(n for n, _ in parts) / sum(c for _, c in parts)).backward()
        opt.step()
        weights.append(digest(model.parameters()))
    model.eval()
    prompts = [WORLD_PROMPT_FORMAT.render(tokenizer, r["problem"], r["strategy"]) for r in world["heldout"]]
    ids, mask = pad(tokenize_prompts(tokenizer, prompts, max_length=None), tokenizer.pad_token_id, "left")
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "weights": weights,
        "logits": digest([logits]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", type=int, metavar="THREADS", help="probe this process only, with THREADS torch threads")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(probe(args.one)))
        return 0
    for name, threads, env in ROWS:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("MKL_", "ATEN_", "OMP_"))}
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(threads)], env={**clean, **env}, capture_output=True, text=True
        )
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        print(json.dumps({"row": name, **env, **json.loads(proc.stdout.splitlines()[-1])}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
