"""Median optimizer-step time of TRL's GRPOTrainer, our GRPO, our SGPO (with extra and with equal
rollouts), and our SGPO sampling with a colocated vLLM engine (`use_vllm`, when vllm is installed),
side by side in one run.

Same tiny Qwen2, same problems, same batch (PROBLEMS problems per step), every completion exactly
MAX_LEN tokens (`min_new_tokens`, so sampling luck cannot change the work), the same reward function
(math-verify in a process pool), CPU. Columns:

- trl_grpo, grpo: G = 8 autonomous completions per problem;
- sgpo: the same 8 autonomous + G/2 = 4 guided completions per problem (12 sequences: more rollouts);
- sgpo_equal: 4 autonomous + 4 guided (the same 8 sequences per problem as GRPO): SGPO's own cost,
  the teacher pass and the distillation term on top of as many sampled sequences (the guided
  prompts carry the strategy, so they are longer);
- sgpo_vllm: sgpo sampling with vLLM;
- grpo_vllm, sgpo_equal_vllm: grpo and sgpo_equal sampling with vLLM (no padded batch: a guided
  prompt's extra length costs its own prefill only, as on a GPU).

Each step's time splits into the time the trainer logs as sampling (`time/generate_s`) and the rest
(rewards, no-grad passes, the teacher pass, the loss, backward and the optimizer step); for the
equal-rollout ratios the last line also has the same ratio of each part (`*_sampling`, `*_besides_sampling`,
medians over steps, then over rounds): what SGPO's longer guided prompts cost at sampling, and what
its teacher pass and distillation term cost.

SGPO distils on all guided completions with weight 1 (the most work it can do). Every round runs
the trainers one after the other, the order reversed from round to round. A trainer's figure is the
median of its per-step times after WARMUP steps, per round; each ratio is the median over the rounds
of that round's ratio (the two trainers of a ratio ran minutes apart at most, so slow drift of the
machine's load cancels), and the per-round ratios are printed too, with the load average. Prints the
per-stage breakdown of each trainer (seconds per step), then, as its last line:

    {"<column>_s", "grpo_vs_trl", "sgpo_vs_grpo", "sgpo_equal_rollouts_vs_grpo", "sgpo_vllm_vs_sgpo",
     "sgpo_equal_rollouts_vs_grpo_vllm", "<ratio>_cpu" (the same of the steps' CPU times, which depend
     less on other jobs), "<equal-rollout ratio>_sampling", "<equal-rollout ratio>_besides_sampling",
     "rounds": {ratio: [per round]}, "load_avg_1m": [start, end]}

With --profile DIR, one extra run of grpo and of sgpo_equal under torch.profiler writes each one's
table of operators (self CPU time, top 40) and a Chrome trace to DIR, after the timed rounds.

usage: python benchmarks/step_time.py [--steps 10] [--warmup 2] [--rounds 3] [--columns grpo,sgpo_equal,...]
       [--head-implementation chunked|plain] [--no-vllm] [--profile DIR]
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
from dataclasses import dataclass

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from sgpo.config import SGPOConfig  # noqa: E402
from sgpo.testing import build_tiny_model, build_tiny_tokenizer, tiny_arithmetic_rows  # noqa: E402
from sgpo.trainer import SGPOTrainer  # noqa: E402

PROBLEMS, G, MAX_LEN, HIDDEN, LAYERS = 4, 8, 48, 128, 4


class StepClock(TrainerCallback):
    """Wall-clock and CPU time (this process's, all its threads) of every optimizer step."""

    def __init__(self):
        self.stamps: list[tuple[float, float]] = []

    def on_step_begin(self, args, state, control, **kw):
        if not self.stamps:
            self.stamps.append((time.perf_counter(), time.process_time()))

    def on_step_end(self, args, state, control, **kw):
        self.stamps.append((time.perf_counter(), time.process_time()))

    def durations(self, warmup: int, cpu: bool = False) -> list[float]:
        k = 1 if cpu else 0
        d = [b[k] - a[k] for a, b in zip(self.stamps, self.stamps[1:])]
        return d[warmup:]


@dataclass
class Run:
    """One trainer's run: wall and CPU time of each timed step, seconds per step of each logged stage
    (mean over all steps), and the time each timed step logged as sampling (our trainers only)."""

    durations: list[float]
    cpu: list[float]
    stages: dict[str, float]
    sampling: list[float] | None = None

    def besides_sampling(self) -> list[float]:
        return [d - g for d, g in zip(self.durations, self.sampling or [])]


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


def run_trl(steps: int, warmup: int) -> Run:
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
    return Run(clock.durations(warmup), clock.durations(warmup, cpu=True), {k: v / n for k, v in timings.items()})


def _accuracy(prompts, completions, answer, **kw):
    """The real accuracy reward (math-verify in a process pool), plus a small length-parity term so
    that a random policy's batch has non-zero advantages and a real gradient."""
    from sgpo.rewards import accuracy_reward

    return [a + 0.5 * (len(c) % 2) for a, c in zip(accuracy_reward(prompts, completions, answer), completions)]


def run_ours(
    steps: int, warmup: int, guided: int, head_implementation: str, use_vllm: bool = False, autonomous: int = G, profile=None
) -> Run:
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
            **{**common(out, steps + warmup), "num_generations": autonomous},
        )
        clock = StepClock()
        trainer = SGPOTrainer(model, [_accuracy], args, rows, processing_class=tok, callbacks=[clock])
        if profile is None:
            trainer.train()
        else:
            with profile:
                trainer.train()
        n = steps + warmup
        sums: dict[str, float] = defaultdict(float)
        sampling = []  # the time each step logged as sampling (one log record per step: logging_steps=1)
        for rec in trainer.state.log_history:
            for k, v in rec.items():
                if k.startswith("time/") and k != "time/generate_and_score_s":
                    sums[k[5:-2]] += v
            if "time/generate_s" in rec:
                sampling.append(rec["time/generate_s"])
    return Run(clock.durations(warmup), clock.durations(warmup, cpu=True), {k: v / n for k, v in sums.items()}, sampling[warmup:])


RATIOS = {  # name: (numerator, denominator)
    "grpo_vs_trl": ("grpo", "trl_grpo"),
    "sgpo_vs_grpo": ("sgpo", "grpo"),
    "sgpo_equal_rollouts_vs_grpo": ("sgpo_equal", "grpo"),
    "sgpo_vllm_vs_sgpo": ("sgpo_vllm", "sgpo"),
    "sgpo_equal_rollouts_vs_grpo_vllm": ("sgpo_equal_vllm", "grpo_vllm"),
}
EQUAL_ROLLOUTS = ("sgpo_equal_rollouts_vs_grpo", "sgpo_equal_rollouts_vs_grpo_vllm")  # ratios split into sampling and the rest


def profile_runs(a, out_dir: str) -> None:
    """One run of grpo and of sgpo_equal under torch.profiler: the operator table and a Chrome trace each."""
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for name, guided, autonomous in (("grpo", 0, G), ("sgpo_equal", G // 2, G // 2)):
        prof = profile(activities=[ProfilerActivity.CPU], record_shapes=False)
        run_ours(a.steps, a.warmup, guided, a.head_implementation, autonomous=autonomous, profile=prof)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
        Path(out_dir, f"{name}_ops.txt").write_text(table)
        prof.export_chrome_trace(str(Path(out_dir, f"{name}_trace.json")))
        print(f"# profile of {name}: {out_dir}/{name}_ops.txt", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps per trainer per round (≥ 10)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating the order of the trainers")
    p.add_argument(
        "--head-implementation", default="chunked", choices=["chunked", "plain"], help="SGPOConfig.head_implementation"
    )
    p.add_argument("--no-vllm", action="store_true", help="leave out the columns sampling with vLLM")
    p.add_argument(
        "--columns",
        help="comma-separated subset of trl_grpo,grpo,sgpo,sgpo_equal,sgpo_vllm,grpo_vllm,sgpo_equal_vllm (default: all)",
    )
    p.add_argument("--profile", metavar="DIR", help="also profile one run of grpo and sgpo_equal into DIR")
    a = p.parse_args()
    import importlib.util

    with_vllm = not a.no_vllm and importlib.util.find_spec("vllm") is not None
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    chunk = a.head_implementation
    runners = {
        "trl_grpo": lambda: run_trl(a.steps, a.warmup),
        "grpo": lambda: run_ours(a.steps, a.warmup, 0, chunk),
        "sgpo": lambda: run_ours(a.steps, a.warmup, G // 2, chunk),
        "sgpo_equal": lambda: run_ours(a.steps, a.warmup, G // 2, chunk, autonomous=G // 2),
    }
    if with_vllm:
        runners["sgpo_vllm"] = lambda: run_ours(a.steps, a.warmup, G // 2, chunk, use_vllm=True)
        runners["grpo_vllm"] = lambda: run_ours(a.steps, a.warmup, 0, chunk, use_vllm=True)
        runners["sgpo_equal_vllm"] = lambda: run_ours(a.steps, a.warmup, G // 2, chunk, use_vllm=True, autonomous=G // 2)
    if a.columns:
        wanted = a.columns.split(",")
        unknown = set(wanted) - set(runners)
        if unknown:
            p.error(f"unknown or unavailable columns: {', '.join(sorted(unknown))}")
        runners = {k: v for k, v in runners.items() if k in wanted}
    load = [round(os.getloadavg()[0], 2)]
    medians: dict[str, list[float]] = defaultdict(list)
    cpu_medians: dict[str, list[float]] = defaultdict(list)
    stages: dict[str, list[dict]] = defaultdict(list)
    parts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))  # name: part: [per round]
    for r in range(a.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for name in order:
            run = runners[name]()
            d = run.durations
            medians[name].append(statistics.median(d))
            cpu_medians[name].append(statistics.median(run.cpu))
            stages[name].append(run.stages)
            if run.sampling:
                parts[name]["sampling"].append(statistics.median(run.sampling))
                parts[name]["besides_sampling"].append(statistics.median(run.besides_sampling()))
            print(
                f"round {r} {name}: median {statistics.median(d):.3f}s over {len(d)} steps (load {os.getloadavg()[0]:.2f})",
                file=sys.stderr,
            )
    load.append(round(os.getloadavg()[0], 2))
    print(
        f"# setting: {PROBLEMS} problems x {G} completions x {MAX_LEN} tokens per step, SGPO +{G // 2} guided "
        f"(equal rollouts: {G // 2} + {G // 2}), Qwen2 hidden {HIDDEN} x {LAYERS} layers, LM head {chunk}, "
        f"{torch.get_num_threads()} threads"
    )
    for name, runs in stages.items():
        keys = sorted({k for s in runs for k in s})
        breakdown = {k: round(statistics.mean(s.get(k, 0.0) for s in runs), 4) for k in keys}
        print(json.dumps({"breakdown_s_per_step": name, **breakdown}))
    summary: dict = {f"{k}_s": round(statistics.median(v), 4) for k, v in medians.items()}
    rounds = {}
    for ratio, (num, den) in RATIOS.items():
        if num in medians and den in medians:
            rounds[ratio] = [round(x / y, 3) for x, y in zip(medians[num], medians[den])]
            summary[ratio] = round(statistics.median(rounds[ratio]), 3)
            cpu = [x / y for x, y in zip(cpu_medians[num], cpu_medians[den])]
            summary[f"{ratio}_cpu"] = round(statistics.median(cpu), 3)
            if ratio in EQUAL_ROLLOUTS:
                for part in ("sampling", "besides_sampling"):
                    x, y = parts[num][part], parts[den][part]
                    summary[f"{ratio}_{part}"] = round(statistics.median(u / v for u, v in zip(x, y)), 3)
    summary.update(rounds=rounds, load_avg_1m=load)
    if a.profile:
        profile_runs(a, a.profile)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
