"""What a training run logs: the metric window, `metrics.jsonl`, and the figures of each rollout.

`MetricWindow` accumulates every metric of one logging window as (sum, count) on each process;
`reduce` sums them over the processes and turns them into the logged values (means, per-step or
per-window sums, extremes); `MetricsJSONLCallback` appends each log entry to `OUTPUT_DIR/metrics.jsonl`.
`log_rollout` adds the figures of one generation batch, `log_reward_spread` TRL's `reward_std` and
`frac_reward_zero_std`; `CompletionLog` is TRL's `log_completions` table. docs/algorithm.md names every metric.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback

from sgpo.objectives import SamplerCorrectionStats
from sgpo.phases import GroupStats, RolloutPlan, Selection

#: metrics logged as the extreme over the logging window and the processes (minima kept negated)
EXTREMES = (
    "sampling/importance_sampling_ratio/max",
    "sampling/importance_sampling_ratio/min",
    "sampling/sampling_logp_difference/max",
)


def metric_keys(strategy_sources: Sequence[str], reward_names: Sequence[str]) -> list[str]:
    """Every (sum, count) metric a run may log, in the order they are logged: the same on every process."""
    keys = [
        "reward/auto", "reward/guided", "reward/gap", "accuracy/auto", "accuracy/guided",
        "completion_length/auto", "completion_length/guided", "completions/truncated_frac",
        "distill/weight_mean", "distill/weighted_frac", "distill/selected_sequences", "distill/kl",
        "distill/masked_frac", "distill/loss", "distill/tokens", "rl/loss", "clip/low", "clip/high",
        "clip/region", "kl", "problems/without_strategy_frac", "tokens/generated", "reward/strong_response",
        "reward_std", "frac_reward_zero_std", "entropy",
    ]  # fmt: skip
    keys += [
        f"time/{k}_s"
        for k in ("generate_and_score", "generate", "weight_sync", "rewards", "old_logps", "reference", "teacher", "train_step")
    ]
    keys += ["sampling/importance_sampling_ratio/mean", "sampling/sampling_logp_difference/mean"]
    for name in strategy_sources:
        keys += [f"accuracy/guided/{name}", f"reward/gap/{name}", f"distill/weight_mean/{name}", f"distill/kl/{name}"]
    return keys + [f"rewards/{n}" for n in reward_names]


class MetricWindow:
    """The metrics of one logging window on this process: (sum, count) per key, and extremes."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)
        self.maxes: dict[str, float] = {}
        self.start(0)

    def start(self, global_step: int) -> None:
        """Begin a window at `global_step` (the start of training, or a resumed step)."""
        self.last_time = time.perf_counter()
        self.last_step = global_step

    def add(self, key: str, total: float, count: float) -> None:
        """Accumulate a metric as (sum, count); count 0 means "a sum to report as is" (per logging window)."""
        self.sums[key] += float(total)
        self.counts[key] += float(count)

    def add_extreme(self, key: str, value: float) -> None:
        """Keep the largest `value` of metric `key` in this logging window."""
        self.maxes[key] = max(self.maxes.get(key, -math.inf), float(value))

    def total(self, key: str) -> float:
        """The sum of metric `key` so far in this window (0 when it has none)."""
        return self.sums.get(key, 0.0)

    @contextmanager
    def timed(self, key: str):
        """Adds the wall time of the block to metric `key` (seconds per logging window)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(key, time.perf_counter() - t0, 0)

    def reduce(self, accelerator, global_step: int) -> dict[str, float]:
        """The window's values over all processes (every process must call it), then a new window.
        Means of (sum, count) metrics; per optimizer step for the losses; sums for times, tokens and
        selected sequences; `tokens_per_second` from the wall time of the window."""
        vals = torch.tensor(
            [[self.sums.get(k, 0.0), self.counts.get(k, 0.0), 1.0 if k in self.sums else 0.0] for k in self.keys],
            dtype=torch.float64,
            device=accelerator.device,
        )
        vals = accelerator.reduce(vals, reduction="sum").cpu()
        steps = max(global_step - self.last_step, 1)
        now = time.perf_counter()
        logs: dict[str, float] = {}
        for k, (total, count, present) in zip(self.keys, vals.tolist()):
            if not present:
                continue
            if k == "tokens/generated":
                logs[k] = total  # sampled since the last log
                logs["tokens_per_second"] = total / max(now - self.last_time, 1e-9)
            elif k in ("rl/loss", "distill/loss"):
                logs[k] = total / steps  # per optimizer step, like "loss"
            elif k in ("distill/tokens", "distill/selected_sequences") or k.startswith("time/"):
                logs[k] = total
            elif count > 0:
                logs[k] = total / count
        extremes = torch.tensor([self.maxes.get(k, -math.inf) for k in EXTREMES], dtype=torch.float64, device=accelerator.device)
        extremes = accelerator.gather(extremes.unsqueeze(0)).amax(0).cpu().tolist()
        for k, v in zip(EXTREMES, extremes):
            if v != -math.inf:
                logs[k] = -v if k.endswith("/min") else v
        self.sums.clear()
        self.counts.clear()
        self.maxes.clear()
        self.last_time, self.last_step = now, global_step
        return logs


class MetricsJSONLCallback(TrainerCallback):
    """Appends every log entry as one JSON line to `OUTPUT_DIR/metrics.jsonl` (main process only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"step": state.global_step, "epoch": state.epoch}
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str, bool)) or v is None})
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def log_rollout(
    metrics: MetricWindow,
    plan: RolloutPlan,
    rewards: torch.Tensor,
    stats: GroupStats,
    weights: torch.Tensor,
    sel: Selection,
    lengths: torch.Tensor,
    truncated: torch.Tensor,
    strategy_sources: Sequence[str],
    num_guided_generations: int,
    groups: torch.Tensor | None = None,
    off_policy: torch.Tensor | None = None,
) -> None:
    """Metrics of one generation batch (this process; the logger sums over processes).
    `tokens/generated` counts the sampled tokens only (not LUFFY's inserted strong responses);
    `groups` (B,) is each problem's index in `strategy_sources` (own vs retrieved strategies)."""
    add = metrics.add
    auto = ~plan.guided
    n_prob = plan.num_problems
    add("reward/auto", rewards[auto].sum().item(), int(auto.sum()))
    add("accuracy/auto", stats.acc_auto.sum().item(), n_prob)
    add("completion_length/auto", lengths[auto].float().sum().item(), int(auto.sum()))
    add("completions/truncated_frac", truncated.float().sum().item(), len(truncated))
    sampled = lengths if off_policy is None else lengths[~off_policy]
    add("tokens/generated", float(sampled.sum()), 0)
    g = stats.has_guided
    if g.any():
        add("reward/guided", rewards[plan.guided].sum().item(), int(plan.guided.sum()))
        add("reward/gap", (stats.reward_guided[g] - stats.reward_auto[g]).sum().item(), int(g.sum()))
        add("accuracy/guided", stats.acc_guided[g].sum().item(), int(g.sum()))
        add("completion_length/guided", lengths[plan.guided].float().sum().item(), int(plan.guided.sum()))
        add("distill/weight_mean", weights[g].sum().item(), int(g.sum()))
        add("distill/weighted_frac", (weights[g] > 0).float().sum().item(), int(g.sum()))
        add("distill/selected_sequences", float(sel.selected.sum()), 0)
    add("problems/without_strategy_frac", float((~g).sum()) if num_guided_generations else 0.0, n_prob)
    for k, name in enumerate(strategy_sources):  # own vs retrieved strategies (docs/strategy-library.md)
        m = g & (groups == k)
        n = int(m.sum())
        add(f"accuracy/guided/{name}", stats.acc_guided[m].sum().item(), n)
        add(f"reward/gap/{name}", (stats.reward_guided[m] - stats.reward_auto[m]).sum().item(), n)
        add(f"distill/weight_mean/{name}", weights[m].sum().item(), n)


def log_sampler_correction(metrics: MetricWindow, st: SamplerCorrectionStats) -> None:
    """The figures of the sampler/trainer importance weights (`sgpo.phases.sampler_weights`):
    `sampling/importance_sampling_ratio/{min,mean,max}`, `sampling/sampling_logp_difference/{mean,max}`
    (|log π_trainer − log π_sampler| of the sampled tokens: vLLM's own log-probs against the trainer's)."""
    key = "sampling/importance_sampling_ratio"
    metrics.add(f"{key}/mean", st.ratio_sum, st.num_ratios)
    metrics.add("sampling/sampling_logp_difference/mean", st.logp_gap_sum, st.num_tokens)
    if st.num_ratios:
        metrics.add_extreme(f"{key}/max", st.ratio_max)
        metrics.add_extreme(f"{key}/min", -st.ratio_min)  # kept negated: every extreme is a max
    if st.num_tokens:
        metrics.add_extreme("sampling/sampling_logp_difference/max", st.logp_gap_max)


def log_reward_spread(metrics: MetricWindow, rewards: torch.Tensor, group_size: int) -> None:
    """TRL's `reward_std` (the unbiased std of the autonomous rewards of the whole generation batch,
    every process's) and `frac_reward_zero_std` (the fraction of groups whose rewards are all equal:
    no gradient from the RL term). `rewards` (B·G,) gathered over processes; the main process alone
    calls this, so the logged value is the generation batch's (the mean over a logging window's)."""
    std = float(rewards.std()) if rewards.numel() > 1 else 0.0
    grouped = rewards.view(-1, group_size)
    group_std = grouped.std(dim=1) if group_size > 1 else torch.zeros(grouped.shape[0])
    metrics.add("reward_std", std, 1)
    metrics.add("frac_reward_zero_std", float(torch.isclose(group_std, torch.zeros_like(group_std)).float().mean()), 1)


class CompletionLog:
    """TRL's `log_completions`: the last rollout's prompts, completions, rewards and advantages, printed
    as a table (TRL's `print_prompt_completions_sample`) at each logging step by the main process.
    `num_rows` rows, evenly spread over the generation batch (all when None; no random draw, so the
    training's random state is untouched)."""

    def __init__(self, num_rows: int | None):
        self.num_rows = num_rows
        self.rows: dict | None = None

    def record(self, prompts: Sequence, completions: Sequence, rewards: dict[str, list[float]], advantages: list[float],
               guided: list[bool]) -> None:  # fmt: skip
        n = len(completions)
        k = n if self.num_rows is None else min(self.num_rows, n)
        pick = sorted({(i * n) // k for i in range(k)}) if k else []
        self.rows = {
            "prompts": [prompts[i] for i in pick],
            "completions": [completions[i] for i in pick],
            "rewards": {name: [values[i] for i in pick] for name, values in rewards.items()},
            "advantages": [advantages[i] for i in pick],
            "extra": {"rollout": ["guided" if guided[i] else "autonomous" for i in pick]},
        }

    def print(self, step: int) -> None:
        """Print the recorded rows (once: nothing new is printed until the next rollout)."""
        if self.rows is None:
            return
        from trl.trainer.utils import print_prompt_completions_sample

        rows, self.rows = self.rows, None
        print_prompt_completions_sample(
            rows["prompts"], rows["completions"], rows["rewards"], rows["advantages"], step, extra=rows["extra"]
        )
