"""Peak memory of one whole training step: TRL 1.16 GRPOTrainer vs our GRPO vs our SGPO (its sequences
back-propagated all at once and in groups), side by side; and the time grouping costs.

    python benchmarks/step_memory.py                      # V = 151,936, H = 896, 2 layers, 2,048-token completions
    python benchmarks/step_memory.py --tokens 512         # quicker

Each trainer runs in its OWN fresh subprocess (one's freed-but-retained memory cannot hide or inflate
another's peak) on the same model shape with a real vocabulary: a random-init Qwen2 of V = 151,936,
H = 896 (Qwen2.5-0.5B's vocabulary and width, tied embeddings), 2 layers, float32 on CPU, SGD (no
optimizer state, so the figures are the step's own). Generation is not measured: every trainer is
fed the same fixed completions of `--tokens` tokens (no EOS, so none is cut), TRL's through its
`rollout_func`, ours through the `_generate` hook (as tests/test_trl_parity.py does):

- trl:  TRL GRPOTrainer, one problem × 2 completions (the smallest GRPO group);
- grpo: our trainer with distill_coef 0, the same 2 completions;
- sgpo: our trainer, the same 2 autonomous completions + 2 guided ones (the strategy in the prompt),
        every guided one distilled (instance_weighting constant, distill_on all): a teacher pass and
        the full-vocabulary KL on top of GRPO's work; its 4 sequences through forward + backward at once;
- sgpo_grouped: the same with `backward_group_size = --group-size` (default 1): the sequences go
        through forward + backward that many at a time (the same update).

Rewards alternate 1, 0 within each group, so every completion has a non-zero advantage. Memory: the
process's resident-set high-water mark (VmHWM), reset to the current RSS just before `train()` by
writing 5 to /proc/self/clear_refs (Linux), minus the RSS at that moment: the step's own peak above
the model, the data and the trainer already built. Also reported: the whole process's peak RSS.
Memory figures do not depend on the machine's load.

Time: `train()`'s wall-clock and CPU time in each worker. sgpo and sgpo_grouped run `--rounds` times
(default 3), alternating which goes first; `grouping_time_ratio` is the median over the rounds of the
per-round ratio grouped / ungrouped wall time (`grouping_cpu_time_ratio`: of CPU times, which depend
less on what else runs on the machine), with the load average when the run started.

Prints one JSON line: {"tokens", "vocab", "group_size", "trl_step_mb", "grpo_step_mb", "sgpo_step_mb",
"sgpo_grouped_step_mb", "sgpo_over_trl" (grouped), "sgpo_ungrouped_over_trl", "grpo_over_trl",
"*_peak_rss_mb", "sgpo_s", "sgpo_grouped_s", "grouping_time_ratio", "grouping_cpu_time_ratio",
"grouping_time_ratios" (per round), "load_avg_1m"}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

VOCAB, HIDDEN, LAYERS = 151_936, 896, 2


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def build(tokenizer):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=4864,
        num_hidden_layers=LAYERS,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


def completion(k: int, tokens: int) -> list[int]:
    """The k-th fixed completion: `tokens` word ids of the tiny vocabulary (no pad, no EOS)."""
    import random

    rng = random.Random(k)
    return [rng.randrange(3, 140) for _ in range(tokens)]


def alternating_reward(prompts, completions, **_):
    return [float(i % 2 == 0) for i in range(len(completions))]


def worker(kind: str, tokens: int, out: Path, group_size: int) -> None:
    import torch

    from sgpo.testing import build_tiny_tokenizer, tiny_arithmetic_rows

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    tokenizer = build_tiny_tokenizer()
    model = build(tokenizer)
    rows = tiny_arithmetic_rows(1)
    common = dict(
        max_completion_length=tokens,
        learning_rate=1e-3,
        optim="sgd",
        max_grad_norm=0.0,
        max_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
        num_generations=2,
        output_dir=str(out.parent / f"run-{kind}"),
    )
    if kind == "trl":
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        def rollout(prompts, trainer):
            ids = [list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
            return {
                "prompt_ids": ids,
                "completion_ids": [completion(i % 2, tokens) for i in range(len(prompts))],
                "logprobs": None,
            }

        args = GRPOConfig(per_device_train_batch_size=2, bf16=False, gradient_checkpointing=False, beta=0.0, **common)
        data = Dataset.from_list([{"prompt": r["problem"], "answer": r["answer"]} for r in rows])
        trainer = GRPOTrainer(
            model=model,
            args=args,
            processing_class=tokenizer,
            reward_funcs=[alternating_reward],
            train_dataset=data,
            rollout_func=rollout,
        )
    else:
        from sgpo.config import SGPOConfig
        from sgpo.rollout import Generation, pad
        from sgpo.trainer import SGPOTrainer

        class FixedCompletions(SGPOTrainer):
            def _generate(self, prompt_ids):
                comps = [completion(i % 2, tokens) for i in range(len(prompt_ids))]
                p_ids, p_mask = pad(prompt_ids, tokenizer.pad_token_id, "left")
                c_ids, c_mask = pad(comps, tokenizer.pad_token_id, "right")
                return Generation(p_ids, p_mask, c_ids, c_mask, ["x"] * len(comps))

        sgpo = dict(num_guided_generations=2, distill_coef=1.0, instance_weighting="constant", distill_on="all")
        grpo = dict(num_guided_generations=0, distill_coef=0.0)
        if kind == "sgpo_grouped":
            sgpo["backward_group_size"] = group_size
        ours = dict(per_device_train_batch_size=1, max_prompt_length=None, overwrite_output_dir=True)
        args = SGPOConfig(**ours, **(grpo if kind == "grpo" else sgpo), **common)
        trainer = FixedCompletions(
            model, args=args, processing_class=tokenizer, reward_funcs=[alternating_reward], train_dataset=rows
        )
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    before = _status_kb("VmRSS")
    import resource
    import time

    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    step_peak = _status_kb("VmHWM") - before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps({"step_mb": step_peak / 1024, "peak_rss_mb": peak, "train_s": wall, "train_cpu_s": cpu}))


KINDS = ("trl", "grpo", "sgpo", "sgpo_grouped")


def run_worker(kind: str, args, tmp: Path, env: dict) -> dict:
    out = tmp / f"{kind}.json"
    cmd = [sys.executable, __file__, "--worker", kind, "--tokens", str(args.tokens), "--group-size", str(args.group_size)]
    proc = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    figures = json.loads(out.read_text())
    print(
        f"{kind}: step peak {figures['step_mb']:.0f} MB above the built trainer, process peak "
        f"{figures['peak_rss_mb']:.0f} MB, train() {figures['train_s']:.1f} s wall, {figures['train_cpu_s']:.1f} s CPU",
        file=sys.stderr,
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2048, help="completion length (default 2048)")
    parser.add_argument("--group-size", type=int, default=1, help="backward_group_size of sgpo_grouped (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of sgpo and sgpo_grouped for the time of grouping")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.tokens, args.out, args.group_size)
        return
    import statistics
    import tempfile

    result: dict = {"tokens": args.tokens, "vocab": VOCAB, "group_size": args.group_size, "load_avg_1m": os.getloadavg()[0]}
    env = dict(
        os.environ,
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRL_EXPERIMENTAL_SILENCE="1",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    runs: dict[str, list[dict]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("trl", "grpo"):
            runs[kind].append(run_worker(kind, args, Path(tmp), env))
        for r in range(max(1, args.rounds)):
            for kind in ("sgpo", "sgpo_grouped") if r % 2 == 0 else ("sgpo_grouped", "sgpo"):
                runs[kind].append(run_worker(kind, args, Path(tmp), env))
    for kind, figures in runs.items():  # memory does not depend on the load: the largest peak of the rounds
        result[f"{kind}_step_mb"] = round(max(f["step_mb"] for f in figures), 1)
        result[f"{kind}_peak_rss_mb"] = round(max(f["peak_rss_mb"] for f in figures), 1)
    result["sgpo_over_trl"] = round(result["sgpo_grouped_step_mb"] / result["trl_step_mb"], 3)
    result["sgpo_ungrouped_over_trl"] = round(result["sgpo_step_mb"] / result["trl_step_mb"], 3)
    result["grpo_over_trl"] = round(result["grpo_step_mb"] / result["trl_step_mb"], 3)
    pairs = list(zip(runs["sgpo"], runs["sgpo_grouped"]))
    result["sgpo_s"] = round(statistics.median(f["train_s"] for f in runs["sgpo"]), 2)
    result["sgpo_grouped_s"] = round(statistics.median(f["train_s"] for f in runs["sgpo_grouped"]), 2)
    result["grouping_time_ratios"] = [round(g["train_s"] / u["train_s"], 3) for u, g in pairs]
    result["grouping_time_ratio"] = round(statistics.median(result["grouping_time_ratios"]), 3)
    result["grouping_cpu_time_ratio"] = round(statistics.median(g["train_cpu_s"] / u["train_cpu_s"] for u, g in pairs), 3)
    result["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
