"""Median optimizer-step time of TRL's GRPOTrainer, our GRPO, our SGPO, and our SGPO sampling with a
colocated vLLM engine (`use_vllm`, when vllm is installed), side by side in one run.

Same tiny Qwen2, same problems, same batch (PROBLEMS problems × G completions per step), every
completion exactly MAX_LEN tokens (`min_new_tokens`, so sampling luck cannot change the work), the
same reward function (math-verify in a process pool), CPU. SGPO adds `num_guided_generations = G/2`
guided completions per problem, distils on all of them with weight 1 (the most work it can do).

The trainers run one after the other, then again in the opposite order; each figure is the median of
the per-step times after WARMUP steps over both rounds, so slow drift on a noisy machine hits all
three alike. Prints the per-stage breakdown of each trainer (seconds per step), then, as its last line:

    {"trl_grpo_s": a, "grpo_s": b, "sgpo_s": c, "sgpo_vllm_s": d, "grpo_vs_trl": b/a, "sgpo_vs_grpo": c/b,
     "sgpo_vllm_vs_sgpo": d/c}

usage: python benchmarks/step_time.py [--steps 10] [--warmup 2] [--rounds 2] [--head-implementation chunked|plain] [--no-vllm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from sgpo.config import SGPOConfig  # noqa: E402
from sgpo.testing import build_tiny_model, build_tiny_tokenizer, tiny_arithmetic_rows  # noqa: E402
from sgpo.trainer import SGPOTrainer  # noqa: E402

PROBLEMS, G, MAX_LEN, HIDDEN, LAYERS = 4, 8, 48, 128, 4


class StepClock(TrainerCallback):
    def __init__(self):
        self.stamps: list[float] = []

    def on_step_begin(self, args, state, control, **kw):
        if not self.stamps:
            self.stamps.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kw):
        self.stamps.append(time.perf_counter())

    def durations(self, warmup: int) -> list[float]:
        d = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        return d[warmup:]


def common(out: str, steps: int) -> dict:
    return dict(
        output_dir=out,
        max_steps=steps,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        num_generations=G,
        max_completion_length=MAX_LEN,
        temperature=1.0,
        loss_type="dapo",
        beta=0.0,
        generation_kwargs={"min_new_tokens": MAX_LEN},
        disable_tqdm=True,
    )


def run_trl(steps: int, warmup: int) -> tuple[list[float], dict]:
    from trl import GRPOConfig, GRPOTrainer

    timings: dict[str, float] = defaultdict(float)

    class TimedGRPO(GRPOTrainer):  # instrumentation only: each stage timed around TRL's own method
        def _generate_single_turn(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._generate_single_turn(*a, **k)
            finally:
                timings["generate"] += time.perf_counter() - t

        def _calculate_rewards(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._calculate_rewards(*a, **k)
            finally:
                timings["rewards"] += time.perf_counter() - t

        def compute_loss(self, *a, **k):
            t = time.perf_counter()
            try:
                return super().compute_loss(*a, **k)
            finally:
                timings["loss_forward"] += time.perf_counter() - t

    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, hidden_size=HIDDEN, layers=LAYERS)
    from datasets import Dataset

    rows = tiny_arithmetic_rows(64)
    data = Dataset.from_list(
        [
            {
                "prompt": tok.apply_chat_template(
                    [{"role": "user", "content": r["problem"]}], tokenize=False, add_generation_prompt=True
                ),
                "answer": r["answer"],
            }
            for r in rows
        ]
    )
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            per_device_train_batch_size=PROBLEMS * G, bf16=False, gradient_checkpointing=False, **common(out, steps + warmup)
        )
        clock = StepClock()
        trainer = TimedGRPO(
            model=model, args=args, processing_class=tok, reward_funcs=[_accuracy], train_dataset=data, callbacks=[clock]
        )
        trainer.train()
    n = steps + warmup
    return clock.durations(warmup), {k: v / n for k, v in timings.items()}


def _accuracy(prompts, completions, answer, **kw):
    """The real accuracy reward (math-verify in a process pool), plus a small length-parity term so
    that a random policy's batch has non-zero advantages and a real gradient."""
    from sgpo.rewards import accuracy_reward

    return [a + 0.5 * (len(c) % 2) for a, c in zip(accuracy_reward(prompts, completions, answer), completions)]


def run_ours(steps: int, warmup: int, guided: int, head_implementation: str, use_vllm: bool = False) -> tuple[list[float], dict]:
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, hidden_size=HIDDEN, layers=LAYERS)
    rows = tiny_arithmetic_rows(64)
    with tempfile.TemporaryDirectory() as out:
        args = SGPOConfig(
            per_device_train_batch_size=PROBLEMS,
            num_guided_generations=guided,
            distill_coef=1.0 if guided else 0.0,
            distill_on="all",
            instance_weighting="constant",
            prompt_template="{problem}",
            head_implementation=head_implementation,
            use_vllm=use_vllm,
            **common(out, steps + warmup),
        )
        clock = StepClock()
        trainer = SGPOTrainer(model, [_accuracy], args, rows, processing_class=tok, callbacks=[clock])
        trainer.train()
        n = steps + warmup
        sums: dict[str, float] = defaultdict(float)
        for rec in trainer.state.log_history:
            for k, v in rec.items():
                if k.startswith("time/") and k != "time/generate_and_score_s":
                    sums[k[5:-2]] += v
    return clock.durations(warmup), {k: v / n for k, v in sums.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps per trainer per round (≥ 10)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="rounds, alternating the order of the trainers")
    p.add_argument(
        "--head-implementation", default="chunked", choices=["chunked", "plain"], help="SGPOConfig.head_implementation"
    )
    p.add_argument("--no-vllm", action="store_true", help="leave out the SGPO-with-vLLM column")
    a = p.parse_args()
    import importlib.util

    with_vllm = not a.no_vllm and importlib.util.find_spec("vllm") is not None
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    chunk = a.head_implementation
    runners = {
        "trl_grpo": lambda: run_trl(a.steps, a.warmup),
        "grpo": lambda: run_ours(a.steps, a.warmup, 0, chunk),
        "sgpo": lambda: run_ours(a.steps, a.warmup, G // 2, chunk),
    }
    if with_vllm:
        runners["sgpo_vllm"] = lambda: run_ours(a.steps, a.warmup, G // 2, chunk, use_vllm=True)
    times: dict[str, list[float]] = defaultdict(list)
    stages: dict[str, list[dict]] = defaultdict(list)
    for r in range(a.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for name in order:
            d, s = runners[name]()
            times[name] += d
            stages[name].append(s)
            print(f"round {r} {name}: median {statistics.median(d):.3f}s over {len(d)} steps", file=sys.stderr)
    print(
        f"# setting: {PROBLEMS} problems x {G} completions x {MAX_LEN} tokens per step, SGPO +{G // 2} guided, "
        f"Qwen2 hidden {HIDDEN} x {LAYERS} layers, LM head {chunk}, {torch.get_num_threads()} threads"
    )
    for name, runs in stages.items():
        keys = sorted({k for s in runs for k in s})
        breakdown = {k: round(statistics.mean(s.get(k, 0.0) for s in runs), 4) for k in keys}
        print(json.dumps({"breakdown_s_per_step": name, **breakdown}))
    med = {k: statistics.median(v) for k, v in times.items()}
    summary = {
        "trl_grpo_s": round(med["trl_grpo"], 4),
        "grpo_s": round(med["grpo"], 4),
        "sgpo_s": round(med["sgpo"], 4),
        "grpo_vs_trl": round(med["grpo"] / med["trl_grpo"], 3),
        "sgpo_vs_grpo": round(med["sgpo"] / med["grpo"], 3),
    }
    if "sgpo_vllm" in med:
        summary.update(sgpo_vllm_s=round(med["sgpo_vllm"], 4), sgpo_vllm_vs_sgpo=round(med["sgpo_vllm"] / med["sgpo"], 3))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
